/* tui.c -- the full-screen front end (ncursesw), after Hermes (spec §8).
 *
 *   +---------------------------------------------------------------+
 *   | Elpis  model @ server  session                        (header)|
 *   | Emotion       | You: ...                                       |
 *   | calm          | Assistant: ...streaming text|                  |
 *   | V [#####-----]|                                     (chat view)|
 *   | A [##--------]|--- thoughts -----------------------------------|
 *   | Status ...    | <reasoning> text, dreams       (thought panel) |
 *   | Tools         |                                                |
 *   | OK Reading a  |------------------------------------------------|
 *   |               | > input line                                   |
 *   | Ctrl+C interrupt  Ctrl+T thoughts ...                  (footer)|
 *   +---------------------------------------------------------------+
 *
 * DESIGN
 *   One thread. While idle, the loop waits for a key (100 ms timeout),
 *   polls the emotion endpoint once a second and redraws when something
 *   changed. While a turn runs, the agent calls back: text and tool events
 *   mark the screen dirty, and its poll callback (every 50 ms, and at once
 *   when the terminal has input) reads keys without blocking, so typing,
 *   scrolling and Ctrl+C keep working during a reply; redraws are throttled
 *   to one per 30 ms.
 *   The terminal is in raw mode, so Ctrl+C arrives as a key: it interrupts
 *   a running turn, and when idle a second one within 1.5 s quits. A SIGINT
 *   from outside (kill -INT) is treated the same way through app->sigint.
 *   Text is kept as UTF-8 and converted to wide characters only to wrap and
 *   draw (wcwidth decides columns), so CJK and emoji wrap correctly.
 *   Dreams: after app->dream_delay_s without a key and without a running
 *   turn (and once per idle period), or on /dream, the UI streams a dream
 *   (elpis_chat_dream) into the thought panel after "[dream] ", opening the
 *   panel (a dream is meant to be seen; Ctrl+T closes it), with "dreaming"
 *   in the sidebar and "[dream]" in the panel's title while it streams. Any key ends it at once: the dream's poll callback takes
 *   the key, the transfer is aborted (the server cancels the dream) and the
 *   key is then handled as if no dream had been running.
 *
 * Keys: Enter send · Up/Down history · Left/Right/Home/End, Ctrl+A/E/K/U/W,
 * Backspace/Delete edit · PgUp/PgDn scroll · Ctrl+T thoughts · Ctrl+L clear
 * · Ctrl+Q quit · Ctrl+C interrupt / quit.
 */
#define NCURSES_WIDECHAR 1
#include "chat_internal.h"

#include <locale.h>
#include <ncursesw/curses.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#define SIDEBAR_W 25
#define INPUT_MAX 4096
#define HISTORY_MAX 100
#define THOUGHTS_MAX (32 * 1024)
#define DOUBLE_TAP_MS 1500.0
#define KEY_CTRL(c) ((c) & 0x1f)

enum { C_EXCITED = 1, C_FRUSTRATED, C_CALM, C_DEPLETED, C_USER, C_ASSISTANT, C_INFO, C_ERROR, C_THOUGHT };

typedef enum entry_kind { E_USER, E_ASSISTANT, E_INFO, E_ERROR } entry_kind;

typedef struct entry {
    entry_kind kind;
    elpis_buf text;
    bool streaming;
} entry;

typedef struct tool_line {
    char mark[4];    /* "..." running, "OK", "!!" */
    char text[96];
} tool_line;

typedef struct tui {
    elpis_chat_app *app;
    entry *entries;
    size_t n_entries, cap_entries;
    elpis_buf thoughts;          /* the thought panel's text */
    bool thought_run;            /* the last text event was a thought */
    tool_line tools[5];          /* newest last */
    int n_tools;
    wchar_t input[INPUT_MAX];
    int in_len, in_pos;
    char *history[HISTORY_MAX];
    int n_hist, hist_pos;        /* hist_pos == n_hist: the line being typed */
    int scroll;                  /* chat view lines scrolled up from the bottom */
    char notice[640];
    double notice_until;
    sig_atomic_t seen_int;
    double last_ctrl_c;
    bool dirty, quit, interrupt;
    double last_draw, next_emotion_poll;
    bool emotion_route;
    const char *status;
    double last_activity;        /* last key or end of a turn (ms) */
    bool dreamed;                /* a dream ran since then */
    bool has_pending;            /* a key that ended a dream, to handle next */
    int pending_r;
    wint_t pending_c;
} tui;

/* ---- model: entries, thoughts, tools ------------------------------------------------------------- */

static entry *add_entry(tui *t, entry_kind k, const char *text) {
    if (t->n_entries == t->cap_entries) {
        size_t cap = t->cap_entries ? t->cap_entries * 2 : 32;
        entry *v = realloc(t->entries, cap * sizeof *v);
        if (!v) return NULL;
        t->entries = v;
        t->cap_entries = cap;
    }
    entry *e = &t->entries[t->n_entries++];
    *e = (entry){ k, { 0 }, false };
    elpis_buf_puts(&e->text, text ? text : "");
    t->scroll = 0;
    t->dirty = true;
    return e;
}

static void clear_entries(tui *t) {
    for (size_t i = 0; i < t->n_entries; i++) elpis_buf_free(&t->entries[i].text);
    t->n_entries = 0;
    t->scroll = 0;
    t->dirty = true;
}

static void add_thought(tui *t, const char *s, size_t n) {
    elpis_buf_append(&t->thoughts, s, n);
    if (t->thoughts.len > THOUGHTS_MAX) {   /* keep the newest part */
        size_t drop = t->thoughts.len - THOUGHTS_MAX / 2;
        memmove(t->thoughts.data, t->thoughts.data + drop, t->thoughts.len - drop + 1);
        t->thoughts.len -= drop;
    }
    t->dirty = true;
}

static void set_notice(tui *t, const char *msg, double seconds) {
    snprintf(t->notice, sizeof t->notice, "%s", msg);
    t->notice_until = elpis_now_ms() + seconds * 1000.0;
    t->dirty = true;
}

static void push_tool(tui *t, const char *mark, const char *text) {
    if (t->n_tools == 5) {
        memmove(t->tools, t->tools + 1, 4 * sizeof *t->tools);
        t->n_tools = 4;
    }
    tool_line *l = &t->tools[t->n_tools++];
    snprintf(l->mark, sizeof l->mark, "%s", mark);
    snprintf(l->text, sizeof l->text, "%s", text);
    t->dirty = true;
}

/* ---- wrapping --------------------------------------------------------------------------------------- */

typedef struct row_line {
    wchar_t *s;
    int n, attr;
} row_line;

typedef struct row_list {
    row_line *v;
    size_t n, cap;
} row_list;

static void rows_push(row_list *L, const wchar_t *s, int n, int attr) {
    if (L->n == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 64;
        row_line *v = realloc(L->v, cap * sizeof *v);
        if (!v) return;
        L->v = v;
        L->cap = cap;
    }
    wchar_t *c = malloc(((size_t)n + 1) * sizeof *c);
    if (!c) return;
    wmemcpy(c, s, (size_t)n);
    c[n] = 0;
    L->v[L->n++] = (row_line){ c, n, attr };
}

static void rows_free(row_list *L) {
    for (size_t i = 0; i < L->n; i++) free(L->v[i].s);
    free(L->v);
    memset(L, 0, sizeof *L);
}

/* UTF-8 -> wide characters; invalid bytes become U+FFFD, tabs spaces. */
static wchar_t *widen(const char *s, size_t n, size_t *out_n) {
    wchar_t *w = malloc((n + 1) * sizeof *w);
    size_t k = 0;
    mbstate_t st;
    memset(&st, 0, sizeof st);
    for (size_t i = 0; w && i < n;) {
        wchar_t c;
        size_t r = mbrtowc(&c, s + i, n - i, &st);
        if (r == (size_t)-1 || r == (size_t)-2 || r == 0) {
            memset(&st, 0, sizeof st);
            c = r == 0 ? L' ' : (wchar_t)0xFFFD;
            r = 1;
        }
        w[k++] = c == L'\t' ? L' ' : c;
        i += r;
    }
    if (w) w[k] = 0;
    *out_n = k;
    return w;
}

static int char_width(wchar_t c) {
    int w = wcwidth(c);
    return w < 0 ? 0 : w;
}

/* Word-wrap text at `width` columns into L (each '\n' starts a line). */
static void wrap(row_list *L, const char *text, size_t len, int width, int attr) {
    size_t n;
    wchar_t *w = widen(text, len, &n);
    if (!w || width < 1) { free(w); return; }
    size_t start = 0;
    while (start <= n) {
        size_t end = start;
        while (end < n && w[end] != L'\n') end++;
        size_t i = start;
        do {   /* one logical line, maybe several display lines */
            int cols = 0;
            size_t j = i, last_space = (size_t)-1;
            while (j < end && cols + char_width(w[j]) <= width) {
                if (w[j] == L' ') last_space = j;
                cols += char_width(w[j++]);
            }
            size_t cut = j;
            if (j < end && last_space != (size_t)-1 && last_space > i) cut = last_space;
            if (cut == i && j < end) cut = i + 1;   /* a character wider than the view */
            rows_push(L, w + i, (int)(cut - i), attr);
            i = cut;
            while (i < end && w[i] == L' ' && cut != j) i++;   /* the space we broke at */
        } while (i < end);
        start = end + 1;
    }
    free(w);
}

/* ---- drawing ------------------------------------------------------------------------------------------- */

static int quadrant_attr(const char *q) {
    if (!strcmp(q, "excited")) return COLOR_PAIR(C_EXCITED) | A_BOLD;
    if (!strcmp(q, "frustrated")) return COLOR_PAIR(C_FRUSTRATED);
    if (!strcmp(q, "calm")) return COLOR_PAIR(C_CALM);
    if (!strcmp(q, "depleted")) return COLOR_PAIR(C_DEPLETED) | A_DIM;
    return A_NORMAL;
}

static void put_wide(int y, int x, const wchar_t *s, int n, int max_cols) {
    int cols = 0, k = 0;
    while (k < n && cols + char_width(s[k]) <= max_cols) cols += char_width(s[k++]);
    mvaddnwstr(y, x, s, k);
}

/* A UTF-8 string at (y, x), cut at max_cols columns. */
static void put_text(int y, int x, const char *s, int max_cols) {
    size_t n;
    wchar_t *w = widen(s, strlen(s), &n);
    if (w) put_wide(y, x, w, (int)n, max_cols);
    free(w);
}

static void fill_line(int y, int x0, int x1, chtype c) {
    for (int x = x0; x < x1; x++) mvaddch(y, x, c);
}

static void draw_header(tui *t) {
    char h[512];
    attron(A_REVERSE);
    fill_line(0, 0, COLS, ' ');
    snprintf(h, sizeof h, " Elpis chat  %s @ %s%s  session %s", t->app->model_name ? t->app->model_name : "?", t->app->client.base,
             t->app->in_process ? " (in-process)" : "", t->app->client.session);
    put_text(0, 0, h, COLS);
    attroff(A_REVERSE);
}

static void draw_footer(tui *t) {
    const char *hint = "Enter send  Ctrl+C interrupt/quit  Ctrl+T thoughts  Ctrl+L clear  PgUp/PgDn scroll  /help";
    bool notice = t->notice[0] && elpis_now_ms() < t->notice_until;
    attron(notice ? A_BOLD : A_DIM);
    fill_line(LINES - 1, 0, COLS, ' ');
    put_text(LINES - 1, 0, notice ? t->notice : hint, COLS);
    attroff(notice ? A_BOLD : A_DIM);
}

static int sidebar_section(int y, const char *title) {
    attron(A_BOLD | A_UNDERLINE);
    put_text(y, 1, title, SIDEBAR_W - 2);
    attroff(A_BOLD | A_UNDERLINE);
    return y + 1;
}

static void draw_sidebar(tui *t, int top, int bottom) {
    elpis_chat_app *a = t->app;
    char line[128], bar[32];
    int y = sidebar_section(top, "Emotion");
    if (a->has_emotion) {
        attron(quadrant_attr(a->quadrant));
        put_text(y++, 1, a->quadrant[0] ? a->quadrant : "?", SIDEBAR_W - 2);
        elpis_chat_bar(a->valence, -1, 1, 10, bar, sizeof bar);
        snprintf(line, sizeof line, "V %s %+.2f", bar, a->valence);
        put_text(y++, 1, line, SIDEBAR_W - 2);
        elpis_chat_bar(a->arousal, 0, 1, 10, bar, sizeof bar);
        snprintf(line, sizeof line, "A %s %+.2f", bar, a->arousal);
        put_text(y++, 1, line, SIDEBAR_W - 2);
        attroff(quadrant_attr(a->quadrant));
        if (a->trend[0]) {
            snprintf(line, sizeof line, "trend %s", a->trend);
            put_text(y++, 1, line, SIDEBAR_W - 2);
        }
    } else {
        attron(A_DIM);
        put_text(y++, 1, "(not available)", SIDEBAR_W - 2);
        attroff(A_DIM);
    }
    y = sidebar_section(y + 1, "Status");
    put_text(y++, 1, t->status, SIDEBAR_W - 2);
    snprintf(line, sizeof line, "msgs %zu  tools %d", json_array_size(a->agent.messages), a->agent.n_tool_calls);
    put_text(y++, 1, line, SIDEBAR_W - 2);
    snprintf(line, sizeof line, "thoughts %s", a->show_thoughts ? "on" : "off");
    put_text(y++, 1, line, SIDEBAR_W - 2);
    y = sidebar_section(y + 1, "Tools");
    for (int i = 0; i < t->n_tools && y < bottom; i++, y++) {
        snprintf(line, sizeof line, "%-3s %s", t->tools[i].mark, t->tools[i].text);
        int attr = !strcmp(t->tools[i].mark, "!!") ? COLOR_PAIR(C_ERROR) : !strcmp(t->tools[i].mark, "OK") ? COLOR_PAIR(C_EXCITED) : A_NORMAL;
        attron(attr);
        put_text(y, 1, line, SIDEBAR_W - 2);
        attroff(attr);
    }
    for (int yy = top; yy < bottom; yy++) mvaddch(yy, SIDEBAR_W, ACS_VLINE);
}

/* The lines of one entry: a label line, the text, a blank separator. */
static void entry_lines(const entry *e, int width, row_list *L) {
    static const char *const label[] = { "You:", "Assistant:", NULL, NULL };
    static const int attr[] = { C_USER, C_ASSISTANT, C_INFO, C_ERROR };
    int a = COLOR_PAIR(attr[e->kind]);
    if (label[e->kind]) wrap(L, label[e->kind], strlen(label[e->kind]), width, a | A_BOLD);
    elpis_buf b = { 0 };
    elpis_buf_append(&b, e->text.data ? e->text.data : "", e->text.len);
    if (e->streaming) elpis_buf_puts(&b, "\xe2\x96\x8c");   /* the cursor: U+258C */
    wrap(L, b.data ? b.data : "", b.len, width, e->kind >= E_INFO ? a : (int)A_NORMAL);
    elpis_buf_free(&b);
    rows_push(L, L"", 0, A_NORMAL);
}

static void draw_chat(tui *t, int top, int height, int x, int width) {
    row_list L = { 0 };
    size_t need = (size_t)height + (size_t)t->scroll, first = t->n_entries;
    /* wrap from the newest entry back until the view (plus the scroll) is full */
    size_t count = 0;
    while (first > 0 && count < need) {
        row_list one = { 0 };
        entry_lines(&t->entries[--first], width, &one);
        count += one.n;
        rows_free(&one);
    }
    for (size_t i = first; i < t->n_entries; i++) entry_lines(&t->entries[i], width, &L);
    int max_scroll = L.n > (size_t)height ? (int)(L.n - (size_t)height) : 0;
    if (t->scroll > max_scroll) t->scroll = max_scroll;
    size_t end = L.n - (size_t)t->scroll, begin = end > (size_t)height ? end - (size_t)height : 0;
    for (size_t i = begin; i < end; i++) {
        attron(L.v[i].attr);
        put_wide(top + (int)(i - begin), x, L.v[i].s, L.v[i].n, width);
        attroff(L.v[i].attr);
    }
    if (t->scroll) {
        char s[48];
        snprintf(s, sizeof s, "[scrolled up %d lines]", t->scroll);
        attron(A_REVERSE);
        put_text(top, x + width - (int)strlen(s), s, (int)strlen(s));
        attroff(A_REVERSE);
    }
    rows_free(&L);
}

static void draw_thoughts(tui *t, int top, int height, int x, int width) {
    attron(A_DIM);
    fill_line(top, x, x + width, ACS_HLINE);
    /* a dream's "[dream]" line scrolls away as it streams: the title keeps saying what this is */
    put_text(top, x + 2, t->status && !strcmp(t->status, "dreaming") ? " thoughts [dream] " : " thoughts ", width - 2);
    attroff(A_DIM);
    row_list L = { 0 };
    wrap(&L, t->thoughts.data ? t->thoughts.data : "", t->thoughts.len, width, COLOR_PAIR(C_THOUGHT) | A_DIM);
    size_t rows = (size_t)height - 1, begin = L.n > rows ? L.n - rows : 0;
    for (size_t i = begin; i < L.n; i++) {
        attron(L.v[i].attr);
        put_wide(top + 1 + (int)(i - begin), x, L.v[i].s, L.v[i].n, width);
        attroff(L.v[i].attr);
    }
    rows_free(&L);
}

/* The input line; returns the cursor column. */
static int draw_input(tui *t, int y, int x, int width) {
    fill_line(y - 1, x, x + width, ACS_HLINE);
    attron(A_BOLD);
    mvaddstr(y, x, "> ");
    attroff(A_BOLD);
    int avail = width - 3, cols_before = 0, from = 0;
    for (int i = 0; i < t->in_pos; i++) cols_before += char_width(t->input[i]);
    while (cols_before > avail) cols_before -= char_width(t->input[from++]);   /* keep the cursor visible */
    if (t->in_len == 0 && !t->app->busy) {
        attron(A_DIM);
        put_text(y, x + 2, "Type your message... (/ for commands)", avail);
        attroff(A_DIM);
        return x + 2;
    }
    put_wide(y, x + 2, t->input + from, t->in_len - from, avail);
    return x + 2 + cols_before;
}

static void draw(tui *t) {
    erase();
    if (COLS < 40 || LINES < 10) {
        put_text(0, 0, "terminal too small (need 40x10)", COLS);
        refresh();
        return;
    }
    int sb = COLS >= 70 ? SIDEBAR_W : -1;   /* no sidebar on narrow terminals */
    int x = sb + 1, width = COLS - x, body_top = 1, input_y = LINES - 2, body_h = input_y - 1 - body_top;
    draw_header(t);
    if (sb > 0) draw_sidebar(t, body_top, input_y - 1);
    int th = t->app->show_thoughts ? ELPIS_MAX(3, body_h * 3 / 10) : 0;   /* at most 30% of the height */
    draw_chat(t, body_top, body_h - th, x, width);
    if (th) draw_thoughts(t, body_top + body_h - th, th, x, width);
    int cx = draw_input(t, input_y, x, width);
    draw_footer(t);
    move(input_y, cx);
    refresh();
    t->dirty = false;
    t->last_draw = elpis_now_ms();
}

static void maybe_draw(tui *t, bool force) {
    if (force || (t->dirty && elpis_now_ms() - t->last_draw >= 30)) draw(t);
}

/* ---- input editing ---------------------------------------------------------------------------------------- */

static void set_input(tui *t, const char *s) {
    size_t n;
    wchar_t *w = widen(s, strlen(s), &n);
    if (!w) return;
    t->in_len = t->in_pos = (int)ELPIS_MIN(n, (size_t)INPUT_MAX - 1);
    wmemcpy(t->input, w, (size_t)t->in_len);
    free(w);
}

/* The input as UTF-8 (malloc'd). */
static char *input_utf8(tui *t) {
    elpis_buf b = { 0 };
    char mb[MB_LEN_MAX];
    mbstate_t st;
    memset(&st, 0, sizeof st);
    for (int i = 0; i < t->in_len; i++) {
        size_t k = wcrtomb(mb, t->input[i], &st);
        if (k != (size_t)-1) elpis_buf_append(&b, mb, k);
    }
    elpis_buf_puts(&b, "");
    return b.data;
}

static void history_add(tui *t, const char *line) {
    if (!*line || (t->n_hist && !strcmp(t->history[t->n_hist - 1], line))) { t->hist_pos = t->n_hist; return; }
    if (t->n_hist == HISTORY_MAX) {
        free(t->history[0]);
        memmove(t->history, t->history + 1, (HISTORY_MAX - 1) * sizeof *t->history);
        t->n_hist--;
    }
    t->history[t->n_hist++] = strdup(line);
    t->hist_pos = t->n_hist;
}

static void history_move(tui *t, int d) {
    int p = t->hist_pos + d;
    if (p < 0 || p > t->n_hist) return;
    t->hist_pos = p;
    if (p == t->n_hist) t->in_len = t->in_pos = 0;
    else set_input(t, t->history[p] ? t->history[p] : "");
}

static void delete_range(tui *t, int from, int to) {
    if (from >= to) return;
    wmemmove(t->input + from, t->input + to, (size_t)(t->in_len - to));
    t->in_len -= to - from;
    t->in_pos = from;
}

static void insert_char(tui *t, wchar_t c) {
    if (t->in_len >= INPUT_MAX - 1 || c < 32) return;
    wmemmove(t->input + t->in_pos + 1, t->input + t->in_pos, (size_t)(t->in_len - t->in_pos));
    t->input[t->in_pos++] = c;
    t->in_len++;
}

/* Editing keys; true if the key was one of them. */
static bool edit_key(tui *t, int is_key, wint_t c) {
    int page = ELPIS_MAX(1, LINES / 2);
    if (is_key) {
        switch (c) {
        case KEY_LEFT: if (t->in_pos > 0) t->in_pos--; return true;
        case KEY_RIGHT: if (t->in_pos < t->in_len) t->in_pos++; return true;
        case KEY_HOME: t->in_pos = 0; return true;
        case KEY_END: t->in_pos = t->in_len; return true;
        case KEY_BACKSPACE: delete_range(t, ELPIS_MAX(0, t->in_pos - 1), t->in_pos); return true;
        case KEY_DC: delete_range(t, t->in_pos, ELPIS_MIN(t->in_len, t->in_pos + 1)); return true;
        case KEY_UP: history_move(t, -1); return true;
        case KEY_DOWN: history_move(t, +1); return true;
        case KEY_PPAGE: t->scroll += page; return true;
        case KEY_NPAGE: t->scroll = ELPIS_MAX(0, t->scroll - page); return true;
        case KEY_RESIZE: return true;
        default: return false;
        }
    }
    switch (c) {
    case 127: case 8: delete_range(t, ELPIS_MAX(0, t->in_pos - 1), t->in_pos); return true;
    case KEY_CTRL('a'): t->in_pos = 0; return true;
    case KEY_CTRL('e'): t->in_pos = t->in_len; return true;
    case KEY_CTRL('k'): t->in_len = t->in_pos; return true;
    case KEY_CTRL('u'): delete_range(t, 0, t->in_pos); return true;
    case KEY_CTRL('w'): {
        int p = t->in_pos;
        while (p > 0 && t->input[p - 1] == L' ') p--;
        while (p > 0 && t->input[p - 1] != L' ') p--;
        delete_range(t, p, t->in_pos);
        return true;
    }
    default:
        if (c >= 32 && c != 127) { insert_char(t, (wchar_t)c); return true; }
        return false;
    }
}

/* ---- Ctrl+C -------------------------------------------------------------------------------------------------- */

/* Ctrl+C (a key or a SIGINT): interrupt a running turn; when idle, quit on the second. */
static void on_ctrl_c(tui *t) {
    if (t->app->busy) {
        t->interrupt = true;
        set_notice(t, "interrupting...", 1.5);
        return;
    }
    double now = elpis_now_ms();
    if (t->last_ctrl_c > 0 && now - t->last_ctrl_c < DOUBLE_TAP_MS) t->quit = true;
    else set_notice(t, "Press Ctrl+C again to quit", DOUBLE_TAP_MS / 1000.0);
    t->last_ctrl_c = now;
}

static void check_signals(tui *t) {
    if (*t->app->sigterm) t->quit = t->interrupt = true;
    if (*t->app->sigint != t->seen_int) {
        t->seen_int = *t->app->sigint;
        on_ctrl_c(t);
    }
}

/* ---- agent callbacks ------------------------------------------------------------------------------------------- */

static entry *last_assistant(tui *t) {
    return t->n_entries && t->entries[t->n_entries - 1].kind == E_ASSISTANT ? &t->entries[t->n_entries - 1] : NULL;
}

static void ui_reply_begin(void *ud) {
    tui *t = ud;
    entry *e = add_entry(t, E_ASSISTANT, "");
    if (e) e->streaming = true;
    t->status = "streaming";
    t->thought_run = false;
    maybe_draw(t, true);
}

static void ui_text(void *ud, bool thought, const char *s, size_t n) {
    tui *t = ud;
    if (thought) {
        if (!t->thought_run && t->thoughts.len) add_thought(t, "\n", 1);
        add_thought(t, s, n);
    } else {
        entry *e = last_assistant(t);
        if (e) elpis_buf_append(&e->text, s, n);
    }
    t->thought_run = thought;
    t->dirty = true;
    maybe_draw(t, false);
}

static void ui_reply_end(void *ud, const char *note) {
    tui *t = ud;
    entry *e = last_assistant(t);
    if (e) {
        e->streaming = false;
        if (note && !strcmp(note, "[interrupted]")) elpis_buf_puts(&e->text, e->text.len ? " [interrupted]" : "[interrupted]");
    }
    if (note && strcmp(note, "[interrupted]")) add_entry(t, E_ERROR, note);
    t->status = "idle";
    t->dirty = true;
    maybe_draw(t, true);
}

static void ui_tool(void *ud, const elpis_tool_call *c, elpis_tool_state st, elpis_tool_outcome o, const char *summary) {
    tui *t = ud;
    char d[96];
    elpis_ws_describe(c->name, c->arguments, d, sizeof d);
    if (st == ELPIS_TOOL_RUNNING) {
        push_tool(t, "...", d);
        t->status = "running a tool";
    } else {
        if (t->n_tools) snprintf(t->tools[t->n_tools - 1].mark, 4, "%s", o == ELPIS_TOOL_OK ? "OK" : "!!");
        if (summary && o != ELPIS_TOOL_OK) {
            char msg[300];
            snprintf(msg, sizeof msg, "%s: %s", c->name, summary);
            add_entry(t, E_ERROR, msg);
        }
        t->status = "streaming";
    }
    t->dirty = true;
    maybe_draw(t, true);
}

static void ui_emotion(void *ud, double v, double a, const char *q) {
    tui *t = ud;
    elpis_chat_set_emotion(t->app, v, a, q);
    t->dirty = true;
}

static void toggle_thoughts(tui *t) {
    t->app->show_thoughts = !t->app->show_thoughts;
    set_notice(t, t->app->show_thoughts ? "thoughts on" : "thoughts off", 1.5);
}

/* Keys that work whether or not a turn runs; true if handled. */
static bool common_key(tui *t, bool is_key, wint_t c) {
    if (!is_key && c == 3) on_ctrl_c(t);
    else if (!is_key && c == KEY_CTRL('q')) t->quit = t->interrupt = true;
    else if (!is_key && c == KEY_CTRL('t')) toggle_thoughts(t);
    else if (!edit_key(t, is_key, c)) return false;
    t->dirty = true;
    return true;
}

/* Read every pending key without blocking (a turn is running). */
static void drain_keys(tui *t) {
    wint_t c;
    int r;
    timeout(0);
    while ((r = get_wch(&c)) != ERR) {
        bool is_key = r == KEY_CODE_YES;
        if (common_key(t, is_key, c)) continue;
        if ((!is_key && (c == '\n' || c == '\r')) || (is_key && c == KEY_ENTER))
            set_notice(t, "a reply is running: Ctrl+C interrupts it", 2);
    }
}

static int ui_poll(void *ud) {
    tui *t = ud;
    check_signals(t);
    drain_keys(t);
    maybe_draw(t, false);
    return t->interrupt;
}

/* A y/n question on the footer line; Ctrl+C, Esc, n and Enter say no. */
static bool ui_confirm(void *ud, const char *tool, const char *detail) {
    tui *t = ud;
    char q[600];
    snprintf(q, sizeof q, "Allow %s: %s ? [y/N]", tool, detail);
    set_notice(t, q, 3600);
    draw(t);
    bool yes = false;
    timeout(100);
    for (;;) {
        wint_t c;
        int r = get_wch(&c);
        check_signals(t);
        if (t->interrupt || t->quit) break;
        if (r == ERR || r == KEY_CODE_YES) continue;
        if (c == 'y' || c == 'Y') { yes = true; break; }
        if (c == 'n' || c == 'N' || c == 27 || c == 3 || c == '\n' || c == '\r') break;
    }
    set_notice(t, yes ? "allowed" : "declined", 2);
    return yes;
}

/* ---- commands and turns ------------------------------------------------------------------------------------------ */

static void tui_say(void *ud, const char *kind, const char *text) {
    tui *t = ud;
    if (!strcmp(kind, "thought")) {
        if (t->thoughts.len) add_thought(t, "\n", 1);
        add_thought(t, text, strlen(text));
        if (!t->app->show_thoughts) add_entry(t, E_INFO, "(a thought arrived: /thoughts on to see it)");
        return;
    }
    add_entry(t, !strcmp(kind, "error") ? E_ERROR : E_INFO, text);
}

static void run_turn(tui *t, const char *line, const elpis_agent_ui *ui) {
    elpis_error err = { 0 };
    add_entry(t, E_USER, line);
    t->app->busy = true;
    t->interrupt = false;
    t->status = "waiting";
    draw(t);
    elpis_status st = elpis_agent_send(&t->app->agent, line, ui, &err);
    t->app->busy = false;
    t->interrupt = false;
    t->status = "idle";
    t->last_ctrl_c = 0;
    t->last_activity = elpis_now_ms();
    if (st == ELPIS_ERANGE) add_entry(t, E_ERROR, err.msg);
    if (st == ELPIS_ECANCELLED) set_notice(t, "interrupted", 2);
    t->next_emotion_poll = 0;   /* refresh the sidebar now */
}

/* ---- dreams ------------------------------------------------------------------------------------------------------- */

static void dream_text(void *ud, const char *s, size_t n) {
    tui *t = ud;
    add_thought(t, s, n);
    maybe_draw(t, false);
}

/* Any key (or a signal) ends the dream; the key is kept for afterwards. */
static int dream_poll(void *ud) {
    tui *t = ud;
    wint_t c;
    check_signals(t);
    timeout(0);
    int r = get_wch(&c);
    if (r != ERR) {
        t->has_pending = true;
        t->pending_r = r;
        t->pending_c = c;
    }
    maybe_draw(t, false);
    return t->has_pending || t->quit || t->interrupt;
}

static void run_dream(tui *t) {
    elpis_error err = { 0 };
    t->dreamed = true;
    t->app->show_thoughts = true;
    if (t->thoughts.len) add_thought(t, "\n", 1);
    add_thought(t, "[dream] ", 8);
    t->status = "dreaming";
    draw(t);
    elpis_status st = elpis_chat_dream(t->app, dream_text, dream_poll, 0, t, NULL, &err);
    if (st == ELPIS_ECANCELLED) add_thought(t, "\n[dream interrupted]", 20);
    else if (st != ELPIS_OK && (strstr(err.msg, "answered 404") || strstr(err.msg, "answered 405"))) {
        t->app->dream_delay_s = 0;   /* the server cannot dream: stop trying */
        add_thought(t, "(dreams are not available on this server)", 42);
    } else if (st != ELPIS_OK) {
        char msg[600];
        snprintf(msg, sizeof msg, " [dream ended: %s]", err.msg);
        add_thought(t, msg, strlen(msg));
    }
    t->status = "idle";
    t->interrupt = false;
    t->last_activity = elpis_now_ms();
    t->next_emotion_poll = 0;
    t->dirty = true;
}

static void maybe_dream(tui *t) {
    double delay = t->app->dream_delay_s * 1000.0;
    if (delay <= 0 || t->dreamed || t->app->busy || elpis_now_ms() - t->last_activity < delay) return;
    run_dream(t);
}

static bool is_dream_command(const char *line) {
    line += strspn(line, " \t");
    size_t n = strcspn(line, " \t");
    return n == 6 && !strncmp(line, "/dream", 6) && !line[n + strspn(line + n, " \t")];
}

static void submit(tui *t, const elpis_agent_ui *ui) {
    char *line = input_utf8(t);
    t->in_len = t->in_pos = 0;
    if (!line) return;
    history_add(t, line);
    const char *p = line + strspn(line, " \t");
    if (*p && is_dream_command(p)) run_dream(t);
    else if (*p) {
        elpis_cmd_result r = elpis_chat_command(t->app, line, tui_say, t);
        if (r == ELPIS_CMD_QUIT) t->quit = true;
        else if (r == ELPIS_CMD_CLEARED) clear_entries(t);
        else if (r == ELPIS_CMD_NOT_A_COMMAND) run_turn(t, line, ui);
    }
    t->dirty = true;
    free(line);
}

static void poll_emotion(tui *t) {
    double now = elpis_now_ms();
    if (!t->emotion_route || now < t->next_emotion_poll) return;
    t->next_emotion_poll = now + 1000;
    bool had = t->app->has_emotion;
    double v = t->app->valence, a = t->app->arousal;
    if (!elpis_chat_refresh_emotion(t->app)) t->emotion_route = t->app->has_emotion;   /* never had one: stop asking */
    if (had != t->app->has_emotion || v != t->app->valence || a != t->app->arousal) t->dirty = true;
}

/* One key while idle. */
static void idle_key(tui *t, int r, wint_t c, const elpis_agent_ui *ui) {
    bool is_key = r == KEY_CODE_YES;
    t->last_activity = elpis_now_ms();
    t->dreamed = false;
    if (common_key(t, is_key, c)) return;
    if (!is_key && c == KEY_CTRL('l')) {
        elpis_agent_clear(&t->app->agent);
        clear_entries(t);
        set_notice(t, "conversation cleared", 1.5);
    } else if ((!is_key && (c == '\n' || c == '\r')) || (is_key && c == KEY_ENTER)) submit(t, ui);
    t->dirty = true;
}

static void tui_free(tui *t) {
    clear_entries(t);
    free(t->entries);
    elpis_buf_free(&t->thoughts);
    for (int i = 0; i < t->n_hist; i++) free(t->history[i]);
}

static void start_curses(void) {
    setlocale(LC_ALL, "");
    initscr();
    raw();
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    set_escdelay(25);
    if (has_colors()) {
        start_color();
        use_default_colors();
        init_pair(C_EXCITED, COLOR_GREEN, -1);
        init_pair(C_FRUSTRATED, COLOR_RED, -1);
        init_pair(C_CALM, COLOR_BLUE, -1);
        init_pair(C_DEPLETED, -1, -1);
        init_pair(C_USER, COLOR_CYAN, -1);
        init_pair(C_ASSISTANT, COLOR_GREEN, -1);
        init_pair(C_INFO, COLOR_YELLOW, -1);
        init_pair(C_ERROR, COLOR_RED, -1);
        init_pair(C_THOUGHT, COLOR_MAGENTA, -1);
    }
}

int elpis_chat_run_tui(elpis_chat_app *app) {
    tui *t = calloc(1, sizeof *t);
    if (!t) return 1;
    t->app = app;
    t->status = "idle";
    t->emotion_route = true;
    t->seen_int = *app->sigint;
    t->last_activity = elpis_now_ms();
    elpis_agent_ui ui = { ui_reply_begin, ui_text, ui_reply_end, ui_tool, ui_emotion, ui_confirm, ui_poll, 0, t };
    app->ws.confirm = app->yes ? NULL : ui_confirm;
    app->ws.confirm_ud = t;
    start_curses();
    add_entry(t, E_INFO, "Welcome to Elpis. Type a message, or /help for commands.");
    while (!t->quit) {
        poll_emotion(t);
        maybe_draw(t, t->dirty || (t->notice[0] && elpis_now_ms() > t->notice_until));
        if (t->notice[0] && elpis_now_ms() > t->notice_until) t->notice[0] = 0;
        wint_t c;
        timeout(100);
        int r = get_wch(&c);
        check_signals(t);
        if (r != ERR) idle_key(t, r, c, &ui);
        maybe_dream(t);
        if (t->has_pending) {   /* the key that ended the dream */
            t->has_pending = false;
            idle_key(t, t->pending_r, t->pending_c, &ui);
        }
    }
    endwin();
    tui_free(t);
    free(t);
    return 0;
}

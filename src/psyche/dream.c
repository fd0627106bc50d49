/* dream.c -- the pure rules of a dream (dream.h, spec §5.6).
 *
 * The intention table and the dynamic queries are the original dream
 * handler's. Its BUG -- the trajectory never reached the handler, so no
 * trajectory query ever fired -- is fixed by the caller passing the
 * trajectory (elpis_emotion_trajectory_of); here a trajectory always counts.
 * "Up to 4 dynamic queries" is read as: build them all in the order above,
 * keep the first ELPIS_DREAM_MAX_DYNAMIC, so mood-driven queries win over
 * topic queries. Everything here is deterministic so the unit tests can pin
 * it.
 */
#include "elpis/dream.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const elpis_dream_intention INTENTIONS[] = {
    { "resolution", "Let the dream find how problems were solved and what made things click.",
      { "problems I solved", "challenges overcome", "moments of success", "when things clicked", "breakthroughs" } },
    { "restoration", "Let the dream rest in what gives energy and meaning.",
      { "moments of joy", "meaningful connections", "things that matter", "what gives me energy", "why I do this" } },
    { "exploration", "Let the dream wander toward questions, possibilities and wonder.",
      { "interesting questions", "things to learn", "curiosity and wonder", "complex problems", "possibilities" } },
    { "synthesis", "Let the dream weave ideas together and notice the patterns between them.",
      { "patterns noticed", "connections between ideas", "emerging understanding", "things coming together", "insights" } },
    { "reflection", "Let the dream revisit what happened and what it meant.",
      { "important moments", "things learned", "conversations", "feelings and emotions", "discoveries" } },
};

const elpis_dream_intention *elpis_dream_intention_of(elpis_quadrant q) {
    switch (q) {
    case ELPIS_QUADRANT_FRUSTRATED: return &INTENTIONS[0];
    case ELPIS_QUADRANT_DEPLETED: return &INTENTIONS[1];
    case ELPIS_QUADRANT_EXCITED: return &INTENTIONS[2];
    case ELPIS_QUADRANT_CALM: return &INTENTIONS[3];
    default: return &INTENTIONS[4];
    }
}

const elpis_dream_intention *elpis_dream_intention_named(const char *theme) {
    for (size_t i = 0; theme && i < ELPIS_ARRAY_LEN(INTENTIONS); i++)
        if (!strcmp(INTENTIONS[i].theme, theme)) return &INTENTIONS[i];
    return NULL;
}

/* ---- dynamic queries ------------------------------------------------------------------ */

static const char *const SPIRAL_QUERIES[][3] = {
    [ELPIS_SPIRAL_POSITIVE] = { "progress", "growth", "what's working" },
    [ELPIS_SPIRAL_NEGATIVE] = { "comfort", "support", "what helps" },
    [ELPIS_SPIRAL_ESCALATING] = { "grounding", "calm moments", "stability" },
    [ELPIS_SPIRAL_WITHDRAWING] = { "energy", "motivation", "excitement" },
};

static const char *const TREND_QUERIES[][3] = {
    [ELPIS_TREND_IMPROVING] = { "keep momentum", "recent wins", NULL },
    [ELPIS_TREND_DECLINING] = { "turning points", "resilience", NULL },
    [ELPIS_TREND_OSCILLATING] = { "balance", "stability", "patterns" },
};

#define PEACE_AFTER_S 300.0

/* Push unless the list is full. */
static elpis_status add(elpis_strv *out, size_t base, const char *q) {
    if (!q || out->n - base >= ELPIS_DREAM_MAX_DYNAMIC) return ELPIS_OK;
    return elpis_strv_push(out, q);
}

static elpis_status add_three(elpis_strv *out, size_t base, const char *const q[3]) {
    elpis_status st = ELPIS_OK;
    for (int i = 0; i < 3 && st == ELPIS_OK; i++) st = add(out, base, q[i]);
    return st;
}

elpis_status elpis_dream_dynamic_queries(const elpis_emotion_trajectory *traj, const elpis_strv *topics, elpis_strv *out) {
    size_t base = out->n;
    elpis_status st = ELPIS_OK;
    if (traj) {
        int d = (int)traj->spiral_direction;
        if (traj->spiral_detected && d > ELPIS_SPIRAL_NONE && d <= ELPIS_SPIRAL_WITHDRAWING)
            st = add_three(out, base, SPIRAL_QUERIES[d]);
        int t = (int)traj->trend;
        if (st == ELPIS_OK && t > ELPIS_TREND_STABLE && t <= ELPIS_TREND_OSCILLATING) st = add_three(out, base, TREND_QUERIES[t]);
        if (st == ELPIS_OK && traj->time_in_quadrant > PEACE_AFTER_S) st = add(out, base, "what brings peace");
    }
    char q[200];
    for (size_t i = 0; st == ELPIS_OK && topics && i < topics->n; i++) {
        snprintf(q, sizeof q, "experiences with %s", topics->v[i]);
        st = add(out, base, q);
        snprintf(q, sizeof q, "what I learned about %s", topics->v[i]);
        if (st == ELPIS_OK) st = add(out, base, q);
    }
    return st;
}

/* ---- topics --------------------------------------------------------------------------- */

#define TOPIC_MIN_LEN 5
#define TOPIC_MAX_LEN 63

static elpis_status topics_of(const char *s, size_t max, elpis_strv *out, size_t base) {
    char w[TOPIC_MAX_LEN + 1];
    while (*s && out->n - base < max) {
        while (*s && !isalnum((unsigned char)*s)) s++;
        size_t n = 0;
        const char *start = s;
        while (isalnum((unsigned char)*s)) {
            if (n < TOPIC_MAX_LEN) w[n++] = (char)tolower((unsigned char)*s);
            s++;
        }
        w[n] = 0;
        if ((size_t)(s - start) < TOPIC_MIN_LEN || (size_t)(s - start) > TOPIC_MAX_LEN) continue;
        if (elpis_mem_is_stopword(w) || elpis_strv_contains(out, w)) continue;
        if (elpis_strv_push(out, w) != ELPIS_OK) return ELPIS_ENOMEM;
    }
    return ELPIS_OK;
}

elpis_status elpis_dream_topics(const char *const *texts, size_t n, size_t max, elpis_strv *out) {
    size_t base = out->n;
    for (size_t i = 0; i < n; i++) {
        if (!texts[i]) continue;
        elpis_status st = topics_of(texts[i], max, out, base);
        if (st != ELPIS_OK) return st;
    }
    return ELPIS_OK;
}

int elpis_dream_per_query(size_t n_queries) {
    int k = n_queries ? ELPIS_DREAM_MAX_MEMORIES / (int)n_queries : ELPIS_DREAM_MAX_MEMORIES;
    return k < 1 ? 1 : k;
}

/* ---- insight and prompt ---------------------------------------------------------------- */

static bool contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (!strncasecmp(hay, needle, n)) return true;
    return false;
}

bool elpis_dream_has_insight(const char *text) {
    static const char *const MARKERS[] = { "realize", "connect", "pattern", "understand", "feel",
                                           "notice", "remember", "insight", "meaning", "significance" };
    for (size_t i = 0; text && i < ELPIS_ARRAY_LEN(MARKERS); i++)
        if (contains_ci(text, MARKERS[i])) return true;
    return false;
}

elpis_status elpis_dream_prompt(const elpis_dream_intention *in, const char *theme, const char *const *memories,
                                size_t n, elpis_buf *out) {
    elpis_buf_puts(out, "You are in a dream state, reflecting on your memories and experiences. "
                        "Let your thoughts drift freely, making connections between ideas and feelings.\n\n");
    elpis_buf_printf(out, "Theme for this dream: %s\n%s\n\nMemories surfacing:\n", theme ? theme : in->theme, in->guidance);
    if (!n) elpis_buf_puts(out, "- (no memories surface; dream from the theme alone)\n");
    for (size_t i = 0; i < n; i++) {
        char *cut = elpis_utf8_prefix(memories[i] ? memories[i] : "", ELPIS_DREAM_MEMORY_CHARS);
        if (!cut) return ELPIS_ENOMEM;
        elpis_buf_printf(out, "- %s%s\n", cut, strlen(cut) < strlen(memories[i] ? memories[i] : "") ? "..." : "");
        free(cut);
    }
    return elpis_buf_puts(out, "\nYour dream:");
}

/* score.c -- the pure functions of the memory system: record helpers,
 * scoring formulas (spec §7), exchange importance (§5.2), the storage filter
 * for compacted messages (§5.3), query terms for BM25 and greedy clustering.
 *
 * Nothing here touches the database or the model, so every rule is unit
 * tested directly (tests/unit/test_memory_score.c). Text lengths are counted
 * in code points, as the original (Python len()) did.
 *
 * Threshold comparisons (">= 0.85", ">= 0.6") allow a tiny epsilon so that a
 * value meant to sit exactly on the threshold is not lost to float rounding.
 */
#include "elpis/memory.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define THRESHOLD_EPS 1e-6

/* ---- names ------------------------------------------------------------------- */

static const char *const TYPE_NAMES[] = { "episodic", "semantic", "procedural", "emotional" };
static const char *const STATUS_NAMES[] = { "short_term", "long_term", "archived" };

const char *elpis_memory_type_name(elpis_memory_type t) {
    return (unsigned)t < ELPIS_ARRAY_LEN(TYPE_NAMES) ? TYPE_NAMES[t] : "episodic";
}

const char *elpis_memory_status_name(elpis_memory_status s) {
    return (unsigned)s < ELPIS_ARRAY_LEN(STATUS_NAMES) ? STATUS_NAMES[s] : "short_term";
}

bool elpis_memory_type_parse(const char *s, elpis_memory_type *out) {
    for (size_t i = 0; s && i < ELPIS_ARRAY_LEN(TYPE_NAMES); i++)
        if (strcmp(s, TYPE_NAMES[i]) == 0) {
            *out = (elpis_memory_type)i;
            return true;
        }
    return false;
}

bool elpis_memory_status_parse(const char *s, elpis_memory_status *out) {
    for (size_t i = 0; s && i < ELPIS_ARRAY_LEN(STATUS_NAMES); i++)
        if (strcmp(s, STATUS_NAMES[i]) == 0) {
            *out = (elpis_memory_status)i;
            return true;
        }
    return false;
}

/* ---- string lists and records -------------------------------------------------- */

elpis_status elpis_strv_push(elpis_strv *sv, const char *s) {
    char *copy = strdup(s ? s : "");
    char **v = copy ? realloc(sv->v, (sv->n + 1) * sizeof *v) : NULL;
    if (!v) {
        free(copy);
        return ELPIS_ENOMEM;
    }
    v[sv->n++] = copy;
    sv->v = v;
    return ELPIS_OK;
}

bool elpis_strv_contains(const elpis_strv *sv, const char *s) {
    for (size_t i = 0; sv && i < sv->n; i++)
        if (strcmp(sv->v[i], s) == 0) return true;
    return false;
}

void elpis_strv_free(elpis_strv *sv) {
    if (!sv) return;
    for (size_t i = 0; i < sv->n; i++) free(sv->v[i]);
    free(sv->v);
    sv->v = NULL;
    sv->n = 0;
}

void elpis_memory_clear(elpis_memory *m) {
    if (!m) return;
    free(m->content);
    free(m->summary);
    free(m->metadata_json);
    elpis_strv_free(&m->tags);
    elpis_strv_free(&m->related_ids);
    elpis_strv_free(&m->source_ids);
    memset(m, 0, sizeof *m);
}

void elpis_memory_list_free(elpis_memory_list *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) elpis_memory_clear(&l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* ---- UTF-8 ------------------------------------------------------------------------ */

static bool is_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

size_t elpis_utf8_chars(const char *s) {
    size_t n = 0;
    for (; s && *s; s++) n += !is_cont((unsigned char)*s);
    return n;
}

/* Byte length of the first n code points. */
static size_t utf8_prefix_bytes(const char *s, size_t n_chars) {
    size_t i = 0, seen = 0;
    while (s[i]) {
        if (!is_cont((unsigned char)s[i])) {
            if (seen == n_chars) break;
            seen++;
        }
        i++;
    }
    return i;
}

char *elpis_utf8_prefix(const char *s, size_t n_chars) {
    if (!s) s = "";
    size_t b = utf8_prefix_bytes(s, n_chars);
    char *out = malloc(b + 1);
    if (!out) return NULL;
    memcpy(out, s, b);
    out[b] = 0;
    return out;
}

/* ---- retrieval formulas (§7) ------------------------------------------------------- */

double elpis_mem_salience(bool present, double valence, double arousal) {
    if (!present) return 0.5;
    return 0.7 * (fabs(arousal) + 1.0) / 2.0 + 0.3 * (fabs(valence) + 1.0) / 2.0;
}

double elpis_mem_importance(double salience, double age_days, int64_t access_count) {
    double fresh = 1.0 - age_days / 365.0;
    double used = (double)(access_count < 0 ? 0 : access_count) / 10.0;
    return 0.4 * salience + 0.3 * (fresh > 0 ? fresh : 0) + 0.3 * (used < 1 ? used : 1);
}

double elpis_mem_recency(const elpis_memory_config *c, double age_hours) {
    double h = age_hours < 0 ? 0 : age_hours;
    if (h > c->max_recency_hours) h = c->max_recency_hours;
    return pow(c->recency_decay_rate, h);
}

static double role_factor(const elpis_memory_config *c, const elpis_strv *tags) {
    if (elpis_strv_contains(tags, "assistant")) return c->assistant_role_factor;
    if (elpis_strv_contains(tags, "user")) return c->user_role_factor;
    return 1.0;
}

double elpis_mem_quality_factor(const elpis_memory_config *c, size_t content_chars, elpis_memory_type type,
                                const elpis_strv *tags) {
    double frac = c->max_content_length > 0 ? ELPIS_MIN((double)content_chars, c->max_content_length) /
                                                  c->max_content_length
                                            : 1.0;
    /* length_weight 1 is the original's len/max, which scored a 50-char fact
     * at a tenth of a 500-char one whatever its relevance; the default keeps
     * a mild preference for substance instead. */
    double len_f = (1.0 - c->length_weight) + c->length_weight * frac;
    double type_f = type == ELPIS_MEM_SEMANTIC ? c->semantic_type_factor : 1.0;
    double f = len_f * type_f * role_factor(c, tags);
    return f < 2.0 ? f : 2.0;
}

double elpis_mem_quality(const elpis_memory_config *c, double relevance, double age_hours, double importance,
                         size_t content_chars, elpis_memory_type type, const elpis_strv *tags) {
    double wsum = c->relevance_weight + c->recency_weight + c->importance_weight;
    if (wsum <= 0) return 0;
    double rel = relevance < 1 ? (relevance > 0 ? relevance : 0) : 1;
    double mix = (c->relevance_weight * rel + c->recency_weight * elpis_mem_recency(c, age_hours) +
                  c->importance_weight * importance) / wsum;
    double q = mix * elpis_mem_quality_factor(c, content_chars, type, tags);
    return q < 1 ? (q > 0 ? q : 0) : 1;
}

double elpis_mem_emotion_similarity(const elpis_memory_config *c, bool has_a, double va, double aa, bool has_b,
                                    double vb, double ab) {
    if (!has_a || !has_b) return 0.5;
    if (c->use_angular_similarity) {
        double na = sqrt(va * va + aa * aa), nb = sqrt(vb * vb + ab * ab);
        if (na < 1e-6 || nb < 1e-6) return 0.5;
        return ((va * vb + aa * ab) / (na * nb) + 1.0) / 2.0;
    }
    double d = sqrt((va - vb) * (va - vb) + (aa - ab) * (aa - ab));
    double s = 1.0 - d / 2.83;   /* 2.83 ~ 2*sqrt(2), the widest distance in the square */
    return s > 0 ? s : 0;
}

double elpis_mem_mood_rerank(double quality, double similarity, double w) {
    return (1.0 - w) * quality + w * similarity;
}

double elpis_mem_rrf(int vec_rank, int bm25_rank, double vec_w, double bm25_w, double k) {
    double s = 0;
    if (vec_rank >= 0) s += vec_w / (k + vec_rank + 1);
    if (bm25_rank >= 0) s += bm25_w / (k + bm25_rank + 1);
    return s;
}

double elpis_mem_cosine(const float *a, const float *b, int dim) {
    double dot = 0, na = 0, nb = 0;
    for (int i = 0; i < dim; i++) {
        dot += (double)a[i] * b[i];
        na += (double)a[i] * a[i];
        nb += (double)b[i] * b[i];
    }
    if (na <= 0 || nb <= 0) return 0;
    return dot / (sqrt(na) * sqrt(nb));
}

/* ---- query terms --------------------------------------------------------------------- */

/* Common English function words: they match nearly every memory and would
 * only add noise to BM25 (FTS5 gives them near-zero idf anyway). */
static const char *const STOPWORDS[] = {
    "a", "about", "above", "after", "again", "all", "am", "an", "and", "any", "are", "as", "at", "be",
    "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did",
    "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has",
    "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if",
    "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor",
    "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out",
    "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their",
    "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those", "through", "to",
    "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while",
    "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves",
};

bool elpis_mem_is_stopword(const char *w) {
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(STOPWORDS); i++)
        if (strcmp(w, STOPWORDS[i]) == 0) return true;
    return false;
}

static bool is_word_byte(unsigned char c) { return isalnum(c) || c == '_' || c >= 0x80; }

elpis_status elpis_mem_query_terms(const char *text, elpis_strv *out) {
    const unsigned char *p = (const unsigned char *)(text ? text : "");
    char word[256];
    while (*p) {
        while (*p && !is_word_byte(*p)) p++;
        const unsigned char *start = p;
        while (*p && is_word_byte(*p)) p++;
        size_t len = (size_t)(p - start);
        if (len < 2 || len >= sizeof word) continue;   /* 1-char terms are noise; giant ones garbage */
        for (size_t i = 0; i < len; i++) word[i] = (char)tolower(start[i]);
        word[len] = 0;
        if (elpis_mem_is_stopword(word) || elpis_strv_contains(out, word)) continue;
        if (elpis_strv_push(out, word) != ELPIS_OK) return ELPIS_ENOMEM;
    }
    return ELPIS_OK;
}

/* ---- clustering ------------------------------------------------------------------------ */

int elpis_mem_cluster(const float *vecs, const bool *has_vec, size_t n, int dim, double threshold,
                      int32_t *cluster_of) {
    double *centroid = dim > 0 ? malloc((size_t)dim * sizeof *centroid) : NULL;
    float *cf = dim > 0 ? malloc((size_t)dim * sizeof *cf) : NULL;
    if (dim > 0 && (!centroid || !cf)) {
        free(centroid);
        free(cf);
        return -1;
    }
    for (size_t i = 0; i < n; i++) cluster_of[i] = -1;
    int n_clusters = 0;
    for (size_t seed = 0; seed < n; seed++) {
        if (cluster_of[seed] >= 0) continue;
        int id = n_clusters++;
        cluster_of[seed] = id;
        if (!vecs || !has_vec || !has_vec[seed] || dim <= 0) continue;   /* no vector: a singleton */
        const float *sv = vecs + seed * (size_t)dim;
        for (int d = 0; d < dim; d++) centroid[d] = sv[d];
        size_t members = 1;
        for (size_t j = seed + 1; j < n; j++) {
            if (cluster_of[j] >= 0 || !has_vec[j]) continue;
            for (int d = 0; d < dim; d++) cf[d] = (float)(centroid[d] / (double)members);
            const float *v = vecs + j * (size_t)dim;
            if (elpis_mem_cosine(cf, v, dim) + THRESHOLD_EPS < threshold) continue;
            cluster_of[j] = id;
            for (int d = 0; d < dim; d++) centroid[d] += v[d];
            members++;
        }
    }
    free(centroid);
    free(cf);
    return n_clusters;
}

bool elpis_mem_cluster_promotes(const elpis_memory_config *c, size_t size, double avg_importance,
                                double importance_threshold) {
    return size >= (size_t)(c->min_cluster_size > 0 ? c->min_cluster_size : 1) &&
           avg_importance + THRESHOLD_EPS >= importance_threshold;
}

/* ---- exchange importance (§5.2) ------------------------------------------------------------ */

/* ASCII case-insensitive substring search. */
static bool contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (const char *p = hay; p && *p; p++)
        if (strncasecmp(p, needle, n) == 0) return true;
    return false;
}

static size_t count_substr(const char *hay, const char *needle) {
    size_t n = 0, len = strlen(needle);
    for (const char *p = hay ? strstr(hay, needle) : NULL; p; p = strstr(p + len, needle)) n++;
    return n;
}

static const char *const EXPLICIT_PHRASES[] = {
    "remember", "important", "note that", "don't forget", "keep in mind", "make a note", "save this", "store this",
};
static const char *const ERROR_WORDS[] = { "error", "failed", "exception", "traceback" };

static bool any_ci(const char *text, const char *const *words, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (contains_ci(text, words[i])) return true;
    return false;
}

elpis_exchange_score elpis_score_exchange(const char *user_text, const char *response, const char *const *tool_results,
                                          size_t n_tool_results, bool has_emotion, double valence, double arousal) {
    elpis_exchange_score s = { 0 };
    size_t len = elpis_utf8_chars(response);
    s.length = len > 1000 ? 0.35 : len > 500 ? 0.25 : len > 200 ? 0.15 : 0;
    size_t fences = count_substr(response, "```");
    s.code = fences >= 4 ? 0.35 : fences >= 2 ? 0.25 : 0;
    s.tools = n_tool_results >= 3 ? 0.3 : n_tool_results >= 1 ? 0.2 : 0;
    for (size_t i = 0; i < n_tool_results; i++)
        if (tool_results[i] && any_ci(tool_results[i], ERROR_WORDS, ELPIS_ARRAY_LEN(ERROR_WORDS))) s.errors = 0.2;
    if (user_text && any_ci(user_text, EXPLICIT_PHRASES, ELPIS_ARRAY_LEN(EXPLICIT_PHRASES))) s.explicit_request = 0.4;
    if (has_emotion) {
        double m = ELPIS_MAX(fabs(valence), fabs(arousal));
        s.emotion = m > 0.7 ? 0.25 : m > 0.5 ? 0.15 : 0;
    }
    double t = s.length + s.code + s.tools + s.errors + s.explicit_request + s.emotion;
    s.total = t < 1.0 ? t : 1.0;
    return s;
}

/* ---- storage filter (§5.3) ---------------------------------------------------------------- */

static const char *const LOW_VALUE[] = {
    "hello", "hi ", "hey ", "thanks", "thank you", "okay", "ok ", "sure", "yes", "no ", "yeah", "please", "sorry",
    "bye", "goodbye",
};
static const char *const HIGH_VALUE[] = {
    " means ", " is defined as ", " refers to ", " because ", " therefore ", " thus ", " prefer ", " like ",
    " enjoy ", " love ", " hate ", " always ", " never ", " usually ", " remember ", " forgot ", " learned ",
    " important ", " significant ", " key ",
};
static const char *const QUESTION_WORDS[] = {
    "who", "what", "where", "when", "why", "how", "can", "could", "would", "should", "do", "does", "did",
    "is", "are", "was", "were", "will", "have", "has", "had",
};
/* Case-sensitive, as the original. The spec lists these and elides the rest;
 * the last four are the obvious sentence openers of the same kind. */
static const char *const KNOWLEDGE[] = {
    "I ", "My ", "I'm ", "You ", "The ", "This ", "We ", "They ", "It ", "That ", "These ", "There ",
};

/* Any whole word of `text` (ASCII case-insensitive) in `words`. */
static bool has_word(const char *text, const char *const *words, size_t n) {
    const char *p = text;
    while (*p) {
        while (*p && !isalnum((unsigned char)*p)) p++;
        const char *s = p;
        while (*p && isalnum((unsigned char)*p)) p++;
        size_t len = (size_t)(p - s);
        for (size_t i = 0; len && i < n; i++)
            if (strlen(words[i]) == len && strncasecmp(s, words[i], len) == 0) return true;
    }
    return false;
}

static bool any_cs(const char *text, const char *const *words, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strstr(text, words[i])) return true;
    return false;
}

static elpis_storage_decision decide(bool store, elpis_memory_type t, const char *why) {
    return (elpis_storage_decision){ .store = store, .type = t, .reason = why };
}

elpis_storage_decision elpis_storage_filter(const char *role, const char *content) {
    if (!content) content = "";
    size_t len = elpis_utf8_chars(content);
    bool high = any_ci(content, HIGH_VALUE, ELPIS_ARRAY_LEN(HIGH_VALUE));
    if (len < 50) return decide(false, ELPIS_MEM_EPISODIC, "too short");
    if (len < 100 && !high && any_ci(content, LOW_VALUE, ELPIS_ARRAY_LEN(LOW_VALUE)))
        return decide(false, ELPIS_MEM_EPISODIC, "low-value pleasantry");
    if (high) return decide(true, ELPIS_MEM_SEMANTIC, "high-value pattern");
    if (role && strcmp(role, "user") == 0) {
        if (len >= 200) return decide(true, ELPIS_MEM_EPISODIC, "long user message");
        if (!strchr(content, '?')) return decide(true, ELPIS_MEM_EPISODIC, "user statement");
        if (has_word(content, QUESTION_WORDS, ELPIS_ARRAY_LEN(QUESTION_WORDS)))
            return decide(false, ELPIS_MEM_EPISODIC, "short user question");
    } else if (role && strcmp(role, "assistant") == 0) {
        if (any_cs(content, KNOWLEDGE, ELPIS_ARRAY_LEN(KNOWLEDGE)))
            return decide(true, ELPIS_MEM_SEMANTIC, "assistant knowledge");
        if (len >= 200) return decide(true, ELPIS_MEM_SEMANTIC, "long assistant message");
        if (len < 100) return decide(true, ELPIS_MEM_EPISODIC, "short assistant message");
    }
    return decide(true, ELPIS_MEM_EPISODIC, "default");
}

/* ---- conversation formatting (§5.3) ------------------------------------------------------------ */

static elpis_status append_prefix(elpis_buf *b, const char *s, size_t n_chars, const char *ellipsis) {
    size_t bytes = utf8_prefix_bytes(s ? s : "", n_chars);
    elpis_status st = elpis_buf_append(b, s ? s : "", bytes);
    if (st == ELPIS_OK && ellipsis && s && s[bytes]) st = elpis_buf_puts(b, ellipsis);
    return st;
}

elpis_status elpis_memory_format_recall(const elpis_memory_results *r, elpis_buf *out) {
    elpis_status st = elpis_buf_puts(out, "[Relevant memories]");
    for (size_t i = 0; st == ELPIS_OK && r && i < r->n; i++) {
        const elpis_memory *m = &r->hits[i].mem;
        const char *text = elpis_utf8_chars(m->content) > 200 && m->summary && *m->summary ? m->summary : m->content;
        st = elpis_buf_printf(out, "\n%zu. [%s] ", i + 1, elpis_memory_type_name(m->type));
        if (st == ELPIS_OK) st = append_prefix(out, text, 300, "...");
    }
    return st;
}

elpis_status elpis_memory_format_exchange(const char *user_text, const char *response, elpis_buf *content,
                                          elpis_buf *summary) {
    /* The original always appended "..." (it sliced without checking length). */
    elpis_status st = elpis_buf_puts(content, "User: ");
    if (st == ELPIS_OK) st = append_prefix(content, user_text, 300, NULL);
    if (st == ELPIS_OK) st = elpis_buf_puts(content, "...\n\nAssistant: ");
    if (st == ELPIS_OK) st = append_prefix(content, response, 800, NULL);
    if (st == ELPIS_OK) st = elpis_buf_puts(content, "...");
    if (st == ELPIS_OK && summary) st = append_prefix(summary, response, 150, NULL);
    return st;
}

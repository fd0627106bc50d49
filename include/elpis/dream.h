/* dream.h -- what a dream is made of (spec §5.6): the intention of the
 * current quadrant, dynamic queries from the emotional trajectory and from
 * the topics of recent conversations, the dream prompt, insight markers.
 *
 * Pure functions: no I/O, no clock, no locks. The server (src/server/dream.c)
 * runs the memory searches and the generation; the unit tests pin the rules
 * here. Query lists are elpis_strv (memory.h): owned strings, in order.
 */
#ifndef ELPIS_DREAM_H
#define ELPIS_DREAM_H

#include "elpis/base.h"
#include "elpis/emotion.h"
#include "elpis/memory.h"

#define ELPIS_DREAM_STATIC_QUERIES 5
#define ELPIS_DREAM_MAX_DYNAMIC 4     /* dynamic queries added to the intention's */
#define ELPIS_DREAM_MAX_TOPICS 5
#define ELPIS_DREAM_MAX_MEMORIES 10
#define ELPIS_DREAM_MEMORY_CHARS 300  /* "- content[:300]..." */
#define ELPIS_DREAM_TOPIC_QUERY "recent conversations"
#define ELPIS_DREAM_SYSTEM "You are in a dream state, free to explore memories and make connections."
#define ELPIS_DREAM_TEMPERATURE 0.9
#define ELPIS_DREAM_MAX_TOKENS 500

typedef struct elpis_dream_intention {
    const char *theme;        /* "resolution", "restoration", "exploration", "synthesis", "reflection" */
    const char *guidance;     /* one sentence for the prompt */
    const char *queries[ELPIS_DREAM_STATIC_QUERIES];
} elpis_dream_intention;

/* The spec's table: frustrated, depleted, excited, calm; anything else
 * (ELPIS_QUADRANT_COUNT) is "reflection". */
const elpis_dream_intention *elpis_dream_intention_of(elpis_quadrant q);
/* The intention whose theme is `theme`, or NULL. */
const elpis_dream_intention *elpis_dream_intention_named(const char *theme);

/* Dynamic queries, in this order, at most ELPIS_DREAM_MAX_DYNAMIC kept:
 * spiral direction (when a spiral is detected), trend, "what brings peace"
 * after 300 s in one quadrant, then "experiences with T" and "what I learned
 * about T" for each topic. traj NULL: topics only. Appends to out. */
elpis_status elpis_dream_dynamic_queries(const elpis_emotion_trajectory *traj, const elpis_strv *topics, elpis_strv *out);

/* Topics of texts: ASCII-alphanumeric words longer than 4 characters,
 * lower-cased, not stop words (elpis_mem_is_stopword), without repeats, in
 * order of appearance, at most `max`. Appends to out. */
elpis_status elpis_dream_topics(const char *const *texts, size_t n, size_t max, elpis_strv *out);

/* Memories per query: max(1, ELPIS_DREAM_MAX_MEMORIES / n_queries). */
int elpis_dream_per_query(size_t n_queries);

/* The text contains an insight marker (case-insensitive): realize, connect,
 * pattern, understand, feel, notice, remember, insight, meaning, significance. */
bool elpis_dream_has_insight(const char *text);

/* The user message of the dream: the reflection preamble, "Theme for this
 * dream: T", the guidance, "Memories surfacing:" with one "- content[:300]..."
 * line per memory (or a line saying none surfaced), then "Your dream:". */
elpis_status elpis_dream_prompt(const elpis_dream_intention *in, const char *theme, const char *const *memories,
                                size_t n, elpis_buf *out);

#endif

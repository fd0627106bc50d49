/* emo.c -- the MCP server's only contact with the emotion module.
 *
 * Every tool and resource that touches emotion goes through these few
 * functions, so the server code never depends on how the state is stored or
 * rendered. The elpis_emotion object is thread safe (it serialises events
 * and commits each before returning), so the reader and the completion
 * thread may call in here at the same time.
 */
#include "mcp_internal.h"

#include <stdlib.h>

json_t *mcp_emo_state(elpis_emotion *e) {
    elpis_emotion_state s;
    double now = elpis_emotion_now();
    elpis_emotion_snapshot(e, now, &s);
    return elpis_emotion_json(&s, elpis_emotion_config_of(e), now, ELPIS_EMOTION_JSON_FULL);
}

json_t *mcp_emo_events(void) { return elpis_emotion_events_json(); }

elpis_status mcp_emo_event(elpis_emotion *e, const char *type, double intensity, elpis_error *err) {
    elpis_emotion_result res;
    elpis_status st = elpis_emotion_event(e, type, intensity, elpis_emotion_now(), NULL, &res, err);
    if (st == ELPIS_OK)
        elpis_log(ELPIS_LOG_INFO, "mcp event=emotion type=%s known=%d intensity=%.2f dv=%.3f da=%.3f", res.event,
                  res.known, res.intensity, res.dv, res.da);
    return st;
}

elpis_status mcp_emo_reset(elpis_emotion *e, elpis_error *err) {
    return elpis_emotion_reset(e, elpis_emotion_now(), NULL, err);
}

void mcp_emo_sampling(elpis_emotion *e, const elpis_mcp_config *cfg, bool t_set, double t, bool modulate,
                      double *t_out, double *p_out) {
    elpis_emotion_state s;
    elpis_emotion_snapshot(e, elpis_emotion_now(), &s);
    bool enabled = modulate && elpis_emotion_config_of(e)->modulation;
    /* the original: an explicit temperature switches modulation off for
     * top_p too (it falls back to the base value) */
    elpis_emotion_sampling m = elpis_emotion_modulate(&s, t_set ? t : cfg->temperature, cfg->top_p, t_set, t_set, enabled);
    *t_out = m.temperature;
    *p_out = m.top_p;
}

float *mcp_emo_steering(elpis_emotion *e, const elpis_emotion_vectors *v, bool *oom) {
    const elpis_emotion_config *cfg = elpis_emotion_config_of(e);
    *oom = false;
    if (!v || !elpis_emotion_config_steering(cfg)) return NULL;
    elpis_emotion_state *s = malloc(sizeof *s);   /* 2.4 KB of history: off the stack */
    float *out = malloc((size_t)v->n_layer * (size_t)v->n_embd * sizeof *out);
    if (!s || !out) {
        *oom = true;
        free(s);
        free(out);
        return NULL;
    }
    elpis_emotion_snapshot(e, elpis_emotion_now(), s);
    bool any = elpis_emotion_steering(v, s, cfg, out);
    free(s);
    if (any) return out;
    free(out);
    return NULL;
}

void mcp_emo_after_response(elpis_emotion *e, const char *text) {
    const char *fired = NULL;
    elpis_error err = { 0 };
    if (elpis_emotion_process_response(e, text, elpis_emotion_now(), &fired, NULL, &err) != ELPIS_OK)
        elpis_log(ELPIS_LOG_WARN, "mcp event=emotion_analysis_failed error=\"%s\"", err.msg);
    else if (fired)
        elpis_log(ELPIS_LOG_INFO, "mcp event=emotion_from_response type=%s", fired);
}

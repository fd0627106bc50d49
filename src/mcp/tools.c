/* tools.c -- the tool registry: one table row per tool, and the tools that
 * answer at once (emotion, capabilities).
 *
 * A row is {name, title, description, input schema, output schema, handler}.
 * tools/list is built from the table, arguments are checked against the same
 * input schema before the handler runs (schema.c), and every result object
 * is both structuredContent and, serialised, the text content (as the
 * original did with json.dumps(result, indent=2)). Adding a tool is one row
 * plus its handler. The memory tools are not rows: the memory library owns
 * them, and mem.c appends them when a store is set.
 *
 * Names and fields follow the original Elpis server (elpis-spec.md §2.1).
 * Extensions are marked as such in their descriptions.
 */
#include "mcp_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- schemas (JSON with ' for ", see schema.c) ------------------------------------ */

#define NUM "{'type':'number'}"
#define STR "{'type':'string'}"

#define EMOTION_STATE                                                                                              \
    "{'type':'object','description':'The emotional state (valence/arousal model)','properties':{"                  \
    "'valence':{'type':'number','minimum':-1,'maximum':1,'description':'bad (-1) .. good (+1)'},"                 \
    "'arousal':{'type':'number','minimum':-1,'maximum':1,'description':'calm (-1) .. excited (+1)'},"             \
    "'quadrant':{'type':'string','enum':['excited','frustrated','calm','depleted']},"                             \
    "'last_update':{'type':'number','description':'epoch seconds of the last event'},"                            \
    "'update_count':{'type':'integer','minimum':0},"                                                              \
    "'baseline':{'type':'object','properties':{'valence':" NUM ",'arousal':" NUM "},'required':['valence','arousal']}," \
    "'steering_coefficients':{'type':'object','properties':{'excited':" NUM ",'frustrated':" NUM ",'calm':" NUM    \
    ",'depleted':" NUM "},'required':['excited','frustrated','calm','depleted']},"                                \
    "'trajectory':{'type':'object','properties':{'valence_velocity':" NUM ",'arousal_velocity':" NUM              \
    ",'trend':{'type':'string','enum':['stable','improving','declining','oscillating']},"                         \
    "'spiral_detected':{'type':'boolean'},'spiral_direction':{'type':['string','null']},"                          \
    "'time_in_quadrant':" NUM ",'momentum':{'type':'string','enum':['neutral','positive','negative']}},"           \
    "'required':['valence_velocity','arousal_velocity','trend','spiral_detected','time_in_quadrant','momentum']}}," \
    "'required':['valence','arousal','quadrant','last_update','update_count','baseline','steering_coefficients',"  \
    "'trajectory']}"

#define MESSAGES                                                                                                    \
    "{'type':'array','minItems':1,'description':'The conversation, oldest first','items':{'type':'object',"         \
    "'properties':{'role':{'type':'string','description':'system, user, assistant or tool'},"                     \
    "'content':{'type':'string'}},'required':['role','content']}}"

#define MAX_TOKENS                                                                                                  \
    "{'type':'integer','minimum':1,'maximum':32768,'default':2048,'description':'Most tokens to generate'}"

#define TEMPERATURE                                                                                                 \
    "{'type':'number','minimum':0,'maximum':2,'description':'Sampling temperature (0: greedy). Absent: derived "   \
    "from the emotional state when emotional_modulation is on'}"

#define GENERATE_INPUT                                                                                              \
    "{'type':'object','properties':{'messages':" MESSAGES ",'max_tokens':" MAX_TOKENS ",'temperature':" TEMPERATURE \
    ",'emotional_modulation':{'type':'boolean','default':true,'description':'Let the emotional state set "          \
    "temperature and top_p when no temperature is given'},"                                                          \
    "'ignore_eos':{'type':'boolean','default':false,'description':'Extension: keep generating past the "            \
    "end-of-text token, up to max_tokens or a full context'}},'required':['messages']}"

#define USAGE                                                                                                       \
    "{'type':'object','properties':{'prompt_tokens':{'type':'integer'},'completion_tokens':{'type':'integer'}}}"

#define FINISH "{'type':'string','enum':['stop','length'],'description':'Extension: why generation ended'}"

#define GENERATE_OUTPUT                                                                                             \
    "{'type':'object','properties':{'content':" STR ",'emotional_state':" EMOTION_STATE                            \
    ",'modulated_params':{'type':'object','description':'The sampling values used','properties':{"                 \
    "'temperature':" NUM ",'top_p':" NUM "},'required':['temperature','top_p']},'finish_reason':" FINISH          \
    ",'usage':" USAGE "},'required':['content','emotional_state','modulated_params']}"

#define OPENAI_TOOLS                                                                                                \
    "{'type':'array','description':'Functions the model may call, OpenAI format','items':{'type':'object',"        \
    "'properties':{'type':{'type':'string','enum':['function']},'function':{'type':'object','properties':{"       \
    "'name':{'type':'string','minLength':1},'description':" STR ",'parameters':{'type':'object'}},"               \
    "'required':['name']}},'required':['function']}}"

#define TOOL_CALLS                                                                                                  \
    "{'type':['array','null'],'description':'Calls found in the reply (null: none), OpenAI format','items':{"      \
    "'type':'object','properties':{'id':" STR ",'type':{'type':'string','enum':['function']},'function':{"        \
    "'type':'object','properties':{'name':" STR ",'arguments':{'type':'string','description':'JSON text'}},"       \
    "'required':['name','arguments']}},'required':['id','type','function']}}"

#define STREAM_ID "{'type':'object','properties':{'stream_id':{'type':'string','description':'From generate_stream_start'}},'required':['stream_id']}"

#define EMPTY_INPUT "{'type':'object','properties':{}}"

/* ---- the table ------------------------------------------------------------------------ */

static const mcp_tool g_tools[] = {
    { "generate", "Generate text",
      "Generate a reply to a conversation. Unless a temperature is given, the emotional state modulates sampling "
      "(higher arousal: lower temperature; higher valence: higher top_p). The reply is then analysed and may shift "
      "the emotional state. Sends notifications/progress with the new text when the call carries a progressToken.",
      GENERATE_INPUT, GENERATE_OUTPUT, mcp_tool_generate },
    { "function_call", "Generate function calls",
      "Generate a reply that may call one of the given functions (OpenAI tools format); returns the calls found "
      "(tool_calls, null when none) in OpenAI format.",
      "{'type':'object','properties':{'messages':" MESSAGES ",'tools':" OPENAI_TOOLS ",'temperature':" TEMPERATURE
      ",'max_tokens':" MAX_TOKENS "},'required':['messages','tools']}",
      "{'type':'object','properties':{'tool_calls':" TOOL_CALLS ",'emotional_state':" EMOTION_STATE
      ",'content':{'type':'string','description':'Extension: the reply without its tool-call blocks'},"
      "'finish_reason':" FINISH "},'required':['tool_calls','emotional_state']}",
      mcp_tool_function_call },
    { "update_emotion", "Update the emotional state",
      "Apply an emotional event (success, failure, test_passed, test_failed, insight, error, user_positive, "
      "user_negative, frustration, blocked, novelty, exploration, user_question, idle, routine; other names shift "
      "arousal slightly) scaled by intensity (clamped to 0..2). Returns the new state.",
      "{'type':'object','properties':{'event_type':{'type':'string','minLength':1,'description':'The event'},"
      "'intensity':{'type':'number','default':1.0,'description':'Scale of the shift, clamped to 0..2'},"
      "'context':{'type':'string','description':'Why (logged only)'}},'required':['event_type']}",
      EMOTION_STATE, mcp_tool_update_emotion },
    { "reset_emotion", "Reset the emotional state", "Return the emotional state to its baseline. Returns the new state.",
      EMPTY_INPUT, EMOTION_STATE, mcp_tool_reset_emotion },
    { "get_emotion", "Get the emotional state",
      "The current emotional state: valence, arousal, quadrant, steering coefficients and trajectory.", EMPTY_INPUT,
      EMOTION_STATE, mcp_tool_get_emotion },
    { "generate_stream_start", "Start a streamed generation",
      "Start generating in the background; returns a stream_id to poll with generate_stream_read. At most "
      "max_streams (100) streams are open at once; a stream not read for the TTL (600 s) is dropped.",
      GENERATE_INPUT,
      "{'type':'object','properties':{'stream_id':" STR ",'status':{'type':'string','enum':['started']},"
      "'emotional_state':" EMOTION_STATE "},'required':['stream_id','status','emotional_state']}",
      mcp_tool_stream_start },
    { "generate_stream_read", "Read a stream",
      "Return the text generated since the last read, without waiting. When is_complete is true the reply also "
      "holds full_content and emotional_state, and the stream is closed.",
      STREAM_ID,
      "{'type':'object','properties':{'new_content':" STR ",'is_complete':{'type':'boolean'},"
      "'total_tokens':{'type':'integer','description':'Tokens generated so far'},'error':" STR
      ",'full_content':" STR ",'emotional_state':" EMOTION_STATE ",'finish_reason':" FINISH
      "},'required':['new_content','is_complete','total_tokens']}",
      mcp_tool_stream_read },
    { "generate_stream_cancel", "Cancel a stream", "Stop a streamed generation and close the stream.", STREAM_ID,
      "{'type':'object','properties':{'status':{'type':'string','enum':['cancelled']},'stream_id':" STR "},"
      "'required':['status','stream_id']}",
      mcp_tool_stream_cancel },
    { "get_capabilities", "Get the server capabilities",
      "The model and generation limits: context_length, max_tokens, backend, model_path and the base temperature "
      "and top_p; as an extension also the scheduler's load.",
      EMPTY_INPUT,
      "{'type':'object','properties':{'context_length':{'type':'integer'},'max_tokens':{'type':'integer'},"
      "'backend':" STR ",'model_path':{'type':['string','null']},'temperature':" NUM ",'top_p':" NUM ","
      "'model':{'type':['string','null']},'n_parallel':{'type':'integer'},'max_streams':{'type':'integer'},"
      "'stream_ttl_seconds':" NUM ",'scheduler':{'type':'object','properties':{'running':{'type':'integer'},"
      "'queued':{'type':'integer'},'cancelled':{'type':'integer'}}}},"
      "'required':['context_length','max_tokens','backend','model_path','temperature','top_p']}",
      mcp_tool_get_capabilities },
};

const mcp_tool *mcp_tools(size_t *n) {
    *n = ELPIS_ARRAY_LEN(g_tools);
    return g_tools;
}

/* ---- results ------------------------------------------------------------------------------ */

static json_t *text_content(const char *text) {
    return json_pack("[{s:s, s:o}]", "type", "text", "text", mcp_text(text, strlen(text)));
}

json_t *mcp_tool_result(json_t *structured) {
    if (!structured) return NULL;
    char *text = json_dumps(structured, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
    json_t *r = text ? json_pack("{s:o, s:o}", "content", text_content(text), "structuredContent", structured) : NULL;
    if (!text) json_decref(structured);
    free(text);
    return r;
}

json_t *mcp_tool_error(const char *msg) {
    /* the original's shape, {"error": "..."}, as the text */
    json_t *e = json_pack("{s:o}", "error", mcp_text(msg, strlen(msg)));
    char *text = e ? json_dumps(e, JSON_INDENT(2)) : NULL;
    json_decref(e);
    json_t *r = text ? json_pack("{s:o, s:b}", "content", text_content(text), "isError", 1) : NULL;
    free(text);
    return r;
}

void mcp_out_error(mcp_tool_out *out, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->error, sizeof out->error, fmt, ap);
    va_end(ap);
    json_decref(out->structured);
    out->structured = NULL;
}

/* ---- tools that answer at once ----------------------------------------------------------------- */

static void state_or_error(elpis_mcp *m, mcp_tool_out *out) {
    if (!(out->structured = mcp_emo_state(m->emo))) mcp_out_error(out, "out of memory rendering the emotional state");
}

void mcp_tool_update_emotion(const mcp_call *c, mcp_tool_out *out) {
    const char *type = json_string_value(json_object_get(c->args, "event_type"));
    const json_t *in = json_object_get(c->args, "intensity");
    const char *why = json_string_value(json_object_get(c->args, "context"));
    elpis_error err = { 0 };
    if (why) elpis_log(ELPIS_LOG_INFO, "mcp event=update_emotion type=%s context=\"%.200s\"", type, why);
    if (mcp_emo_event(c->srv->emo, type, in ? json_number_value(in) : 1.0, &err) != ELPIS_OK) {
        mcp_out_error(out, "update_emotion failed: %s", err.msg);
        return;
    }
    state_or_error(c->srv, out);
}

void mcp_tool_reset_emotion(const mcp_call *c, mcp_tool_out *out) {
    elpis_error err = { 0 };
    if (mcp_emo_reset(c->srv->emo, &err) != ELPIS_OK) {
        mcp_out_error(out, "reset_emotion failed: %s", err.msg);
        return;
    }
    state_or_error(c->srv, out);
}

void mcp_tool_get_emotion(const mcp_call *c, mcp_tool_out *out) { state_or_error(c->srv, out); }

static json_t *sched_load(elpis_sched *s) {
    elpis_sched_stats st;
    elpis_sched_get_stats(s, &st);
    json_int_t cancelled = 0;
    for (int i = 0; i < ELPIS_CANCEL_REASON_COUNT; i++) cancelled += st.cancelled[i];
    return json_pack("{s:i, s:i, s:I}", "running", st.n_running, "queued", st.n_queued, "cancelled", cancelled);
}

void mcp_tool_get_capabilities(const mcp_call *c, mcp_tool_out *out) {
    elpis_mcp *m = c->srv;
    const elpis_mcp_config *cfg = &m->cfg;
    json_t *r = json_pack("{s:i, s:i, s:s, s:o, s:f, s:f, s:i, s:f}", "context_length",
                          m->sched ? elpis_sched_params_of(m->sched)->n_ctx : 0, "max_tokens", cfg->default_max_tokens,
                          "backend", "elpis", "model_path",
                          cfg->model_path ? mcp_text(cfg->model_path, strlen(cfg->model_path)) : json_null(),
                          "temperature", cfg->temperature, "top_p", cfg->top_p, "max_streams", cfg->max_streams,
                          "stream_ttl_seconds", cfg->stream_ttl_s);
    if (r && m->sched) {
        json_object_set_new(r, "model", m->model->name ? mcp_text(m->model->name, strlen(m->model->name)) : json_null());
        json_object_set_new(r, "n_parallel", json_integer(elpis_sched_params_of(m->sched)->n_parallel));
        json_object_set_new(r, "scheduler", sched_load(m->sched));
    }
    if (!(out->structured = r)) mcp_out_error(out, "out of memory");
}

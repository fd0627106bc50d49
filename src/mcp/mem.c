/* mem.c -- the memory tools of `elpis mcp` (the original's Mnemosyne server,
 * elpis-spec.md §2.2), on top of the memory library's own dispatcher.
 *
 * The library owns the tools' names, input schemas and behaviour
 * (elpis_memory_tool_list, elpis_memory_tool), so the MCP and HTTP front
 * ends answer alike. What this file adds is MCP's part: a title and an
 * output schema per tool (structuredContent must be declared to be
 * checkable by clients), appending them to tools/list, and turning the
 * library's {"error": msg} into an isError result.
 *
 * The tools run on the reader thread. They are short (an fsync'ed COMMIT,
 * one embedding, a search over the vector cache); a consolidation run is the
 * longest and is what the caller asked for.
 */
#include "mcp_internal.h"

#include "elpis/memory.h"

#include <stdio.h>
#include <string.h>

#define INT "{'type':'integer'}"
#define NUM "{'type':'number'}"
#define STR "{'type':'string'}"
#define BOOL "{'type':'boolean'}"
#define STRS "{'type':'array','items':{'type':'string'}}"

/* One search hit (elpis_memory_hit_to_json). */
#define HIT                                                                                                        \
    "{'type':'object','properties':{'id':" STR ",'content':" STR ",'summary':" STR ",'memory_type':" STR         \
    ",'tags':" STRS ",'emotional_context':{'type':['object','null']},'importance_score':" NUM                     \
    ",'relevance_score':{'type':['number','null']},'created_at':" STR "},"                                         \
    "'required':['id','content','memory_type','importance_score','relevance_score','created_at']}"

static const struct {
    const char *name, *title, *output_schema;
} g_extra[] = {
    { "store_memory", "Store a memory",
      "{'type':'object','properties':{'id':" STR ",'importance_score':" NUM ",'status':{'type':'string','enum':['stored']}},"
      "'required':['id','importance_score','status']}" },
    { "search_memories", "Search memories",
      "{'type':'object','properties':{'query':" STR ",'hybrid_search':" BOOL ",'results':{'type':'array','items':" HIT
      "}},'required':['query','hybrid_search','results']}" },
    { "get_memory_stats", "Count memories",
      "{'type':'object','properties':{'total_memories':" INT ",'short_term':" INT ",'long_term':" INT ",'archived':" INT
      ",'by_type':{'type':'object'},'with_embedding':" INT ",'embedding_dim':" INT "},"
      "'required':['total_memories','short_term','long_term']}" },
    { "consolidate_memories", "Consolidate memories",
      "{'type':'object','properties':{'clusters_formed':" INT ",'memories_promoted':" INT ",'memories_archived':" INT
      ",'memories_skipped':" INT ",'total_processed':" INT ",'duration_seconds':" NUM ",'cluster_summaries':{"
      "'type':'array','items':{'type':'object','properties':{'promoted_id':" STR ",'source_ids':" STRS
      ",'cluster_size':" INT ",'avg_importance':" NUM ",'dominant_type':" STR "},"
      "'required':['promoted_id','source_ids','cluster_size','avg_importance']}}},"
      "'required':['clusters_formed','memories_promoted','memories_archived','memories_skipped','total_processed',"
      "'duration_seconds','cluster_summaries']}" },
    { "should_consolidate", "Should memories be consolidated",
      "{'type':'object','properties':{'should_consolidate':" BOOL ",'reason':" STR ",'short_term_count':" INT
      ",'long_term_count':" INT "},'required':['should_consolidate','reason','short_term_count','long_term_count']}" },
    { "get_memory_context", "Memories for a prompt",
      "{'type':'object','properties':{'query':" STR ",'memories':{'type':'array','items':{'type':'object',"
      "'properties':{'id':" STR ",'content':" STR ",'summary':" STR ",'created_at':" STR ",'importance_score':" NUM
      "},'required':['id','content','created_at','importance_score']}},'token_count':" INT ",'truncated':" BOOL
      "},'required':['query','memories','token_count','truncated']}" },
    { "delete_memory", "Delete a memory",
      "{'type':'object','properties':{'deleted':" BOOL ",'memory_id':" STR "},'required':['deleted','memory_id']}" },
    { "get_recent_memories", "Recent memories",
      "{'type':'object','properties':{'memories':{'type':'array','items':{'type':'object','properties':{'id':" STR
      ",'content':" STR ",'summary':" STR ",'created_at':" STR ",'importance_score':" NUM ",'status':" STR "},"
      "'required':['id','content','created_at','importance_score','status']}},'count':" INT "},"
      "'required':['memories','count']}" },
};

static int extra_index(const char *name) {
    for (size_t i = 0; i < ELPIS_ARRAY_LEN(g_extra); i++)
        if (!strcmp(g_extra[i].name, name)) return (int)i;
    return -1;
}

/* The library's entry plus title and outputSchema; NULL on OOM or an unknown tool. */
static json_t *list_entry(json_t *lib, json_t *inputs) {
    const char *name = json_string_value(json_object_get(lib, "name"));
    int k = name ? extra_index(name) : -1;
    json_t *out = k >= 0 ? mcp_json_sq(g_extra[k].output_schema) : NULL;
    json_t *in = json_object_get(lib, "inputSchema");
    if (!out || !in || json_object_set(inputs, name, in)) {
        json_decref(out);
        return NULL;
    }
    return json_pack("{s:s, s:s, s:O, s:O, s:o}", "name", name, "title", g_extra[k].title, "description",
                     json_object_get(lib, "description"), "inputSchema", in, "outputSchema", out);
}

elpis_status elpis_mcp_set_memory(elpis_mcp *m, struct elpis_memory_store *store, elpis_error *err) {
    json_t *lib = elpis_memory_tool_list(), *list = json_object_get(m->tools_list, "tools");
    elpis_status st = ELPIS_OK;
    if (m->mem) return elpis_fail(err, ELPIS_EINVAL, "mcp: the memory store is already set");
    if (!lib || !(m->mem_inputs = json_object())) { st = elpis_fail(err, ELPIS_ENOMEM, "mcp: memory tools"); goto done; }
    for (size_t i = 0; i < json_array_size(lib); i++) {
        json_t *row = list_entry(json_array_get(lib, i), m->mem_inputs);
        if (!row || json_array_append_new(list, row)) {
            st = elpis_fail(err, ELPIS_ENOMEM, "mcp: memory tool %zu", i);
            goto done;
        }
    }
    m->mem = store;
done:
    json_decref(lib);
    return st;
}

const json_t *mcp_mem_schema(const elpis_mcp *m, const char *name) {
    return m->mem ? json_object_get(m->mem_inputs, name) : NULL;
}

void mcp_tool_memory(const mcp_call *c, mcp_tool_out *out) {
    json_t *r = elpis_memory_tool(c->srv->mem, c->name, c->args);
    const char *msg = json_string_value(json_object_get(r, "error"));
    if (!r) mcp_out_error(out, "out of memory");
    else if (msg) mcp_out_error(out, "%s", msg);
    else {
        out->structured = r;
        return;
    }
    json_decref(r);
}

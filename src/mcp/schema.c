/* schema.c -- the tool table's JSON, and checking arguments against it.
 *
 * The tool table (tools.c) holds each tool's inputSchema and outputSchema as
 * JSON text, written with ' in place of " so the C literals stay readable;
 * mcp_json_sq turns them back into JSON. (A real apostrophe in a description
 * is written \u0027.)
 *
 * The same input schema that tools/list publishes is the one arguments are
 * checked against before a handler runs, so the two cannot drift apart. The
 * checker knows the keywords the table uses, nothing more: type, properties,
 * required, items, enum, minimum, maximum, minLength, minItems. Unknown
 * keywords (description, default, additionalProperties, ...) are ignored,
 * which is what a validator does with annotations.
 */
#include "mcp_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *mcp_json_sq(const char *text) {
    char *s = strdup(text);
    if (!s) return NULL;
    for (char *p = s; *p; p++)
        if (*p == '\'') *p = '"';
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    if (!j) elpis_log(ELPIS_LOG_ERROR, "mcp: bad table JSON at column %d: %s: %.60s", e.column, e.text, s);
    free(s);
    return j;
}

static bool fail(char *msg, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *msg, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, cap, fmt, ap);
    va_end(ap);
    return false;
}

static const char *type_of(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "unknown";
}

static bool is_type(const json_t *v, const char *t) {
    if (!strcmp(t, "number")) return json_is_number(v);
    if (!strcmp(t, "integer")) {
        /* JSON Schema: 2.0 is an integer too */
        if (json_is_integer(v)) return true;
        double d = json_real_value(v);
        return json_is_real(v) && isfinite(d) && d == floor(d) && fabs(d) < 9.0e15;
    }
    return !strcmp(type_of(v), t);
}

static bool check_type(const json_t *type, const json_t *v, const char *path, char *msg, size_t cap) {
    if (json_is_string(type)) {
        if (is_type(v, json_string_value(type))) return true;
        return fail(msg, cap, "%s: expected %s, got %s", path, json_string_value(type), type_of(v));
    }
    size_t i;
    json_t *t;
    json_array_foreach(type, i, t)
        if (json_is_string(t) && is_type(v, json_string_value(t))) return true;
    return fail(msg, cap, "%s: has the wrong type (%s)", path, type_of(v));
}

static bool check_bounds(const json_t *schema, const json_t *v, const char *path, char *msg, size_t cap) {
    const json_t *min = json_object_get(schema, "minimum"), *max = json_object_get(schema, "maximum");
    if (json_is_number(v)) {
        double d = json_number_value(v);
        if (!isfinite(d)) return fail(msg, cap, "%s: must be finite", path);
        if (min && d < json_number_value(min)) return fail(msg, cap, "%s: %g is below the minimum %g", path, d, json_number_value(min));
        if (max && d > json_number_value(max)) return fail(msg, cap, "%s: %g is above the maximum %g", path, d, json_number_value(max));
    }
    const json_t *min_len = json_object_get(schema, "minLength");
    if (json_is_string(v) && min_len && (json_int_t)json_string_length(v) < json_integer_value(min_len))
        return fail(msg, cap, "%s: must not be empty", path);
    const json_t *min_items = json_object_get(schema, "minItems");
    if (json_is_array(v) && min_items && (json_int_t)json_array_size(v) < json_integer_value(min_items))
        return fail(msg, cap, "%s: needs at least %lld item(s)", path, (long long)json_integer_value(min_items));
    return true;
}

static bool check_enum(const json_t *en, const json_t *v, const char *path, char *msg, size_t cap) {
    size_t i;
    json_t *e;
    json_array_foreach(en, i, e)
        if (json_equal(e, v)) return true;
    char *list = json_dumps(en, JSON_COMPACT);
    fail(msg, cap, "%s: must be one of %s", path, list ? list : "the listed values");
    free(list);
    return false;
}

static bool check_object(const json_t *schema, const json_t *v, const char *path, char *msg, size_t cap) {
    char sub[256];
    size_t i;
    json_t *req;
    json_array_foreach(json_object_get(schema, "required"), i, req)
        if (json_is_string(req) && !json_object_get(v, json_string_value(req)))
            return fail(msg, cap, "%s.%s: is required", path, json_string_value(req));
    const char *key;
    json_t *prop;
    json_object_foreach((json_t *)json_object_get(schema, "properties"), key, prop) {
        const json_t *pv = json_object_get(v, key);
        if (!pv) continue;
        snprintf(sub, sizeof sub, "%s.%s", path, key);
        if (!mcp_schema_check(prop, pv, sub, msg, cap)) return false;
    }
    return true;
}

static bool check_items(const json_t *items, const json_t *v, const char *path, char *msg, size_t cap) {
    char sub[256];
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item) {
        snprintf(sub, sizeof sub, "%s[%zu]", path, i);
        if (!mcp_schema_check(items, item, sub, msg, cap)) return false;
    }
    return true;
}

bool mcp_schema_check(const json_t *schema, const json_t *v, const char *path, char *msg, size_t cap) {
    const json_t *type = json_object_get(schema, "type"), *en = json_object_get(schema, "enum");
    const json_t *items = json_object_get(schema, "items");
    if (type && !check_type(type, v, path, msg, cap)) return false;
    if (en && !check_enum(en, v, path, msg, cap)) return false;
    if (!check_bounds(schema, v, path, msg, cap)) return false;
    if (json_is_object(v) && !check_object(schema, v, path, msg, cap)) return false;
    if (json_is_array(v) && items && !check_items(items, v, path, msg, cap)) return false;
    return true;
}

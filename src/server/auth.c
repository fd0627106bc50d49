/* auth.c -- API keys and the listen address.
 *
 * A request is authorised when no key is configured, or when it carries one
 * of the keys as `Authorization: Bearer K` or `X-Api-Key: K`. Keys are
 * compared in constant time (per key) so response timing does not leak a
 * prefix. Without keys the server only listens on loopback: refusing at
 * startup is safer than serving an open model to the network by accident.
 */
#include "server_internal.h"

#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

static bool key_equal(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    unsigned char diff = (unsigned char)(na != nb);
    for (size_t i = 0; i < nb; i++) diff |= (unsigned char)(a[i < na ? i : 0] ^ b[i]);
    return diff == 0;
}

static bool key_known(const elpis_server_config *c, const char *k) {
    bool ok = false;
    for (size_t i = 0; i < c->n_api_keys; i++) ok |= key_equal(k, c->api_keys[i]);
    return ok;
}

bool srv_auth_ok(const elpis_server_config *c, struct MHD_Connection *conn) {
    if (c->n_api_keys == 0) return true;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (h && !strncasecmp(h, "Bearer ", 7)) {
        h += 7;
        while (*h == ' ') h++;
        if (key_known(c, h)) return true;
    }
    h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Api-Key");
    return h && key_known(c, h);
}

static bool addr_is_loopback(const struct sockaddr *sa) {
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) return true;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) return in6->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

elpis_status srv_resolve_host(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len,
                              bool *loopback, elpis_error *err) {
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res) return elpis_fail(err, ELPIS_EINVAL, "server.host: cannot resolve '%s': %s", host, gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    if (ss->ss_family == AF_INET) ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else if (ss->ss_family == AF_INET6) ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    else return elpis_fail(err, ELPIS_EINVAL, "server.host: '%s' is not an IPv4 or IPv6 address", host);
    *loopback = addr_is_loopback((const struct sockaddr *)ss);
    return ELPIS_OK;
}

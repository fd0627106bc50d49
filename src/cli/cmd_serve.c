/* cmd_serve.c -- `elpis serve`: run the HTTP server until SIGTERM/SIGINT.
 *
 * Signals: SIGTERM and SIGINT are blocked in every thread (the mask is set
 * before any thread starts, and threads inherit it) and read from a
 * signalfd by the main thread, which then drains and stops the server. No
 * work happens in a signal handler. SIGPIPE is ignored: a client that hangs
 * up must cost a failed write, not the process.
 *
 * Exit codes: 0 after a clean shutdown, 1 on a runtime error (model, memory
 * budget, address in use), 2 on a configuration or usage error.
 */
#include "cli.h"

#include "elpis/server.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

/* Block the shutdown signals and return a descriptor that reads them. */
static int shutdown_signals(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) return -1;
    signal(SIGPIPE, SIG_IGN);
    return signalfd(-1, &set, SFD_CLOEXEC);
}

static const char *wait_signal(int fd) {
    struct signalfd_siginfo si;
    for (;;) {
        ssize_t n = read(fd, &si, sizeof si);
        if (n == (ssize_t)sizeof si) return si.ssi_signo == SIGINT ? "INT" : "TERM";
        if (n < 0 && errno != EINTR) return "error";
    }
}

int cmd_serve(int argc, char **argv) {
    elpis_server_config cfg;
    elpis_server *srv = NULL;
    elpis_error err = { 0 };
    bool help = false;
    int rc = CLI_EXIT_ERROR, sfd = -1;
    elpis_server_config_init(&cfg);
    if (elpis_server_config_load(&cfg, argc, argv, &help, &err) != ELPIS_OK) {
        cli_error("serve", "%s", err.msg);
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    if (help) {
        elpis_server_config_usage(stdout);
        rc = CLI_EXIT_OK;
        goto done;
    }
    const char *model = cli_model_path(cfg.model_path, "serve");
    if (!model) goto done;
    if (!cfg.model_path && !(cfg.model_path = strdup(model))) goto done;
    if ((sfd = shutdown_signals()) < 0) {
        cli_error("serve", "cannot set up signal handling: %s", strerror(errno));
        goto done;
    }
    if (elpis_server_new(&srv, &cfg, &err) != ELPIS_OK) {
        cli_error("serve", "%s", err.msg);
        rc = err.code == ELPIS_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_ERROR;
        goto done;
    }
    fprintf(stderr, "elpis serve: listening on http://%s:%u (log %s)\n", cfg.host, elpis_server_port(srv), cfg.log_file);
    elpis_server_shutdown(srv, wait_signal(sfd));
    rc = CLI_EXIT_OK;
done:
    elpis_server_free(srv);
    if (sfd >= 0) close(sfd);
    elpis_server_config_free(&cfg);
    return rc;
}

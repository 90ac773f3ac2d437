/* A pause process for containerd's pod sandboxes in bench/cri (an offline stand-in for
 * registry.k8s.io/pause, which does the same): reap children, exit on SIGINT/SIGTERM. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { _exit(0); (void)sig; }
static void reap(int sig) { while (waitpid(-1, NULL, WNOHANG) > 0) {} (void)sig; }

int main(void) {
    struct sigaction q = {.sa_handler = quit}, r = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
    sigaction(SIGINT, &q, NULL);
    sigaction(SIGTERM, &q, NULL);
    sigaction(SIGCHLD, &r, NULL);
    for (;;) pause();
}

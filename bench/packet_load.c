/* Minimal TCP load generator for bench/packet_cost.py (no netperf here).
 *
 *   packet_load server PORT discard|echo
 *   packet_load stream|rr|crr HOST PORT SECONDS
 *   packet_load probe HOST PORT TIMEOUT_MS
 *
 * server  accepts one connection at a time (every client mode is sequential):
 *         "discard" reads and drops, "echo" sends back what it reads.
 * stream  one connection, 64 KiB writes as fast as possible, in Mbit/s.
 * rr      one connection, 1-byte request / 1-byte response, in transactions/s.
 * crr     a new connection per transaction (connect, 1-byte request, 1-byte
 *         response, close with SO_LINGER 0 so the client keeps no TIME_WAIT),
 *         in connections/s.
 *         The client modes print one line: RATE WALL_SECONDS CPU_SECONDS, the
 *         last being the CPU time this process used (softirq work done in
 *         its context included, as this kernel has no IRQ time accounting).
 * probe   a TCP connect within TIMEOUT_MS; prints "open" (exit 0) or
 *         "blocked" (exit 1).
 * Any socket error is fatal: message on stderr, exit 2.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STREAM_BUF (64 * 1024)

static void die(const char *what) {
    fprintf(stderr, "packet_load: %s: %s\n", what, strerror(errno));
    exit(2);
}

static double clock_seconds(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now(void) { return clock_seconds(CLOCK_MONOTONIC); }

static struct sockaddr_in address(const char *host, int port) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "packet_load: bad IPv4 address %s\n", host);
        exit(2);
    }
    return sa;
}

static int tcp_socket(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) die("TCP_NODELAY");
    return fd;
}

static int connect_to(const struct sockaddr_in *sa) {
    int fd = tcp_socket();
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) < 0) die("connect");
    return fd;
}

/* Close with an RST: no TIME_WAIT left behind on either side. */
static void abort_close(int fd) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) < 0) die("SO_LINGER");
    close(fd);
}

/* One 1-byte request and its 1-byte response. */
static void transact(int fd) {
    char byte = 'x';
    if (write(fd, &byte, 1) != 1) die("write request");
    ssize_t n = read(fd, &byte, 1);
    if (n != 1) {
        if (n == 0) errno = ECONNRESET;
        die("read response");
    }
}

static void serve_connection(int fd, int echo) {
    static char buf[STREAM_BUF];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) break; /* EOF, or the client's RST */
        if (echo && write(fd, buf, n) != n) break;
    }
    close(fd);
}

static _Noreturn void run_server(int port, int echo) {
    int fd = tcp_socket();
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) die("SO_REUSEADDR");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(fd, 1024) < 0) die("listen");
    for (;;) {
        int conn = accept(fd, NULL, NULL);
        if (conn < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            die("accept");
        }
        serve_connection(conn, echo);
    }
}

/* Each client mode runs for `seconds` and returns the units of work done
 * (megabits, transactions, connections), setting *elapsed. */
static double run_stream(const struct sockaddr_in *sa, double seconds, double *elapsed_out) {
    static char buf[STREAM_BUF];
    memset(buf, 'x', sizeof buf);
    int fd = connect_to(sa);
    double start = now(), elapsed = 0;
    long long bytes = 0;
    while (elapsed < seconds) {
        ssize_t n = write(fd, buf, sizeof buf);
        if (n < 0) die("write");
        bytes += n;
        elapsed = now() - start;
    }
    close(fd);
    *elapsed_out = elapsed;
    return bytes * 8 / 1e6;
}

static double run_rr(const struct sockaddr_in *sa, double seconds, double *elapsed_out) {
    int fd = connect_to(sa);
    double start = now(), elapsed = 0;
    long long count = 0;
    while (elapsed < seconds) {
        transact(fd);
        count++;
        elapsed = now() - start;
    }
    close(fd);
    *elapsed_out = elapsed;
    return count;
}

static double run_crr(const struct sockaddr_in *sa, double seconds, double *elapsed_out) {
    double start = now(), elapsed = 0;
    long long count = 0;
    while (elapsed < seconds) {
        int fd = connect_to(sa);
        transact(fd);
        abort_close(fd);
        count++;
        elapsed = now() - start;
    }
    *elapsed_out = elapsed;
    return count;
}

/* Wait for fd to be ready for `events` within the deadline; 0 on timeout. */
static int wait_for(int fd, short events, double deadline) {
    int left_ms = (int)((deadline - now()) * 1000);
    if (left_ms <= 0) return 0;
    struct pollfd p = {.fd = fd, .events = events};
    int r = poll(&p, 1, left_ms);
    if (r < 0) die("poll");
    return r;
}

static int run_probe(const struct sockaddr_in *sa, int timeout_ms) {
    double deadline = now() + timeout_ms / 1000.0;
    int fd = tcp_socket();
    if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0) die("fcntl");
    int open = 0;
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0) {
        open = 1;
    } else if (errno == EINPROGRESS && wait_for(fd, POLLOUT, deadline)) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) die("SO_ERROR");
        open = err == 0;
    }
    abort_close(fd);
    puts(open ? "open" : "blocked");
    return open ? 0 : 1;
}

static _Noreturn void usage(void) {
    fputs("usage: packet_load server PORT discard|echo\n"
          "       packet_load stream|rr|crr HOST PORT SECONDS\n"
          "       packet_load probe HOST PORT TIMEOUT_MS\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc == 4 && strcmp(argv[1], "server") == 0) {
        if (strcmp(argv[3], "discard") != 0 && strcmp(argv[3], "echo") != 0) usage();
        run_server(atoi(argv[2]), strcmp(argv[3], "echo") == 0);
    }
    if (argc != 5) usage();
    struct sockaddr_in sa = address(argv[2], atoi(argv[3]));
    if (strcmp(argv[1], "probe") == 0) return run_probe(&sa, atoi(argv[4]));
    double seconds = atof(argv[4]);
    double (*run)(const struct sockaddr_in *, double, double *);
    if (strcmp(argv[1], "stream") == 0) run = run_stream;
    else if (strcmp(argv[1], "rr") == 0) run = run_rr;
    else if (strcmp(argv[1], "crr") == 0) run = run_crr;
    else usage();
    double cpu_start = clock_seconds(CLOCK_PROCESS_CPUTIME_ID), elapsed;
    double units = run(&sa, seconds, &elapsed);
    printf("%.1f %.6f %.6f\n", units / elapsed, elapsed, clock_seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu_start);
    return 0;
}

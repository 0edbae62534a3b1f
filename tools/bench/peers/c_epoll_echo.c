/*
 * c_epoll_echo: an echo server in C, one thread, edge-triggered epoll: the
 * ceiling of the benchmark, about as fast as one core gets with
 * read(2)/write(2) and no framework at all.
 *
 *   c_epoll_echo ADDR [--reuseport]
 *
 * ADDR is like 127.0.0.1:0 or [::1]:0. It prints `listening tcp ADDR` with
 * the bound address; SIGTERM or SIGINT makes it exit 0. With --reuseport
 * the socket has SO_REUSEPORT, so several copies can share one port (start
 * the first on port 0, the others on the port it announced).
 *
 * How it works: non-blocking sockets, an accept4 loop, and one 64 KiB read
 * buffer shared by every connection. On each readable event a connection
 * is read until it is empty, and each chunk is written straight back: a
 * read shorter than the buffer has emptied the socket, so no further read
 * is made to see EAGAIN (data that arrives later raises a new edge), and
 * an echo costs one read(2) and one write(2). Only what
 * the kernel would not take is kept, in a small heap buffer of that
 * connection, and while it is there the connection is not read (so it
 * holds at most one chunk, and a client that does not read is slowed down
 * by TCP itself); it is flushed on EPOLLOUT. A connection is closed on EOF
 * (once its echo is out) or on any error.
 *
 * Build: gcc -O2 -Wall -Wextra -o c_epoll_echo c_epoll_echo.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUF (64 * 1024)
#define MAX_EVENTS 256

/* One connection. `pending` holds the part of an echo the kernel did not
 * take yet (NULL when there is none). */
struct conn {
    int fd;
    char *pending;
    size_t pending_len;
    size_t pending_off;
    int read_paused; /* input left unread while `pending` is flushed */
    int eof;         /* the peer sent EOF: close once `pending` is out */
};

static char buf[READ_BUF];

/* Tags for the two sockets that are not connections. */
static char listener_tag, signal_tag;

static void usage(const char *message, const char *arg)
{
    fprintf(stderr, "c_epoll_echo: %s%s (usage: c_epoll_echo ADDR [--reuseport])\n", message, arg);
    exit(2);
}

/* Parses 127.0.0.1:PORT or [::1]:PORT. Returns 0 on success. */
static int parse_addr(const char *text, struct sockaddr_storage *out, socklen_t *len)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port_text;
    size_t host_len;

    memset(out, 0, sizeof *out);
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (end == NULL || end[1] != ':')
            return -1;
        host_len = (size_t)(end - text - 1);
        if (host_len >= sizeof host)
            return -1;
        memcpy(host, text + 1, host_len);
        port_text = end + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (colon == NULL)
            return -1;
        host_len = (size_t)(colon - text);
        if (host_len >= sizeof host)
            return -1;
        memcpy(host, text, host_len);
        port_text = colon + 1;
    }
    host[host_len] = '\0';

    char *rest;
    errno = 0;
    long port = strtol(port_text, &rest, 10);
    if (port_text[0] == '\0' || *rest != '\0' || errno != 0 || port < 0 || port > 65535)
        return -1;

    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (text[0] != '[' && inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((unsigned short)port);
        *len = sizeof *v4;
        return 0;
    }
    if (text[0] == '[' && inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((unsigned short)port);
        *len = sizeof *v6;
        return 0;
    }
    return -1;
}

/* Prints `listening tcp ADDR` for the socket's bound address. */
static void announce(int fd)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    char host[INET6_ADDRSTRLEN];

    if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        perror("c_epoll_echo: getsockname");
        exit(1);
    }
    if (addr.ss_family == AF_INET) {
        struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
        inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
        printf("listening tcp %s:%u\n", host, ntohs(v4->sin_port));
    } else {
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
        inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
        printf("listening tcp [%s]:%u\n", host, ntohs(v6->sin6_port));
    }
    fflush(stdout);
}

static void close_conn(struct conn *c)
{
    close(c->fd); /* also takes it out of the epoll set */
    free(c->pending);
    free(c);
}

/* Writes out what is pending. Returns 0 when all is out, 1 if the kernel
 * takes no more for now, -1 on error. */
static int flush_pending(struct conn *c)
{
    while (c->pending_off < c->pending_len) {
        ssize_t n = write(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 1 : -1;
        }
        c->pending_off += (size_t)n;
    }
    free(c->pending);
    c->pending = NULL;
    c->pending_len = c->pending_off = 0;
    return 0;
}

/* Writes `len` bytes of `buf` back; keeps what the kernel does not take.
 * Returns 0 if all went out, 1 if some is kept, -1 on error. */
static int echo_back(struct conn *c, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(c->fd, buf + off, len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return -1;
            c->pending = malloc(len - off);
            if (c->pending == NULL)
                return -1;
            memcpy(c->pending, buf + off, len - off);
            c->pending_len = len - off;
            c->pending_off = 0;
            return 1;
        }
        off += (size_t)n;
    }
    return 0;
}

/* Reads until the socket is empty (or until an echo is held back), echoing
 * each chunk. Returns -1 if the connection is to be closed now. */
static int read_and_echo(struct conn *c)
{
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n > 0) {
            int r = echo_back(c, (size_t)n);
            if (r < 0)
                return -1;
            if (r > 0) {
                /* The peer is not reading: stop reading it until it has. */
                c->read_paused = 1;
                return 0;
            }
            if ((size_t)n < sizeof buf) {
                /* A short read emptied the socket. */
                c->read_paused = 0;
                return 0;
            }
        } else if (n == 0) {
            c->eof = 1;
            return 0;
        } else if (errno == EAGAIN) {
            c->read_paused = 0;
            return 0;
        } else if (errno != EINTR) {
            return -1;
        }
    }
}

/* Handles the events of one connection. */
static void on_conn(struct conn *c, unsigned events)
{
    if (events & EPOLLERR) {
        close_conn(c);
        return;
    }
    if (c->pending != NULL && (events & EPOLLOUT)) {
        int r = flush_pending(c);
        if (r < 0) {
            close_conn(c);
            return;
        }
    }
    /* Read on new input, or on input left unread while an echo was held. */
    if (c->pending == NULL && !c->eof && ((events & (EPOLLIN | EPOLLHUP)) || c->read_paused)) {
        if (read_and_echo(c) < 0) {
            close_conn(c);
            return;
        }
    }
    if (c->eof && c->pending == NULL)
        close_conn(c);
}

/* Accepts every connection waiting in the backlog. */
static void on_listener(int epfd, int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN)
                /* Out of descriptors, mostly. With edge triggering, the
                 * next connection to arrive wakes the loop again. */
                perror("c_epoll_echo: accept4");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        /* Registered once for both directions: with edge triggering, an
         * EPOLLOUT edge only comes after the socket was full, so it costs
         * nothing while writes go straight through. */
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            perror("c_epoll_echo: epoll_ctl");
            close_conn(c);
        }
    }
}

int main(int argc, char **argv)
{
    const char *addr_text = NULL;
    int reuseport = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reuseport") == 0)
            reuseport = 1;
        else if (strncmp(argv[i], "--", 2) == 0)
            usage("unknown flag ", argv[i]);
        else if (addr_text == NULL)
            addr_text = argv[i];
        else
            usage("give exactly one address", "");
    }
    if (addr_text == NULL)
        usage("give exactly one address", "");
    struct sockaddr_storage addr;
    socklen_t addr_len;
    if (parse_addr(addr_text, &addr, &addr_len) != 0)
        usage("not an address like 127.0.0.1:0 or [::1]:0: ", addr_text);

    /* SIGTERM and SIGINT arrive on a descriptor the loop polls, from before
     * the announce line on; a write to a closed peer is an error, not a
     * signal. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &stop, SFD_NONBLOCK | SFD_CLOEXEC);

    int lfd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        (reuseport && setsockopt(lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) ||
        bind(lfd, (struct sockaddr *)&addr, addr_len) != 0 || listen(lfd, SOMAXCONN) != 0) {
        fprintf(stderr, "c_epoll_echo: cannot bind %s: %s\n", addr_text, strerror(errno));
        return 1;
    }

    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN | EPOLLET, .data.ptr = &listener_tag};
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &signal_tag};
    if (sfd < 0 || epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) != 0 ||
        epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &sev) != 0) {
        perror("c_epoll_echo: setup");
        return 1;
    }
    announce(lfd);

    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("c_epoll_echo: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            void *tag = events[i].data.ptr;
            if (tag == &signal_tag)
                return 0; /* SIGTERM or SIGINT: the kernel closes the rest */
            if (tag == &listener_tag)
                on_listener(epfd, lfd);
            else
                on_conn(tag, events[i].events);
        }
    }
}

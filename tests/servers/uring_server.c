/* An HTTP server that moves every byte through io_uring (accept, recv, send, close as ring
 * operations, liburing), as io_uring-based servers do: none of it passes through the read,
 * write, send or recv system calls. Answers each request with a fixed 200, one request per
 * connection. Usage: uring_server PORT */
#include <liburing.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { ACCEPT, RECV, SEND, CLOSE };

struct op {
    int kind;
    int fd;
    char buf[4096];
};

static const char answer[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";

static struct op *op_new(int kind, int fd) {
    struct op *o = calloc(1, sizeof *o);
    if (!o) exit(1);
    o->kind = kind;
    o->fd = fd;
    return o;
}

static struct io_uring_sqe *sqe_of(struct io_uring *ring) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) {
        io_uring_submit(ring);
        sqe = io_uring_get_sqe(ring);
    }
    if (!sqe) exit(1);
    return sqe;
}

static void want_accept(struct io_uring *ring, int listener) {
    struct io_uring_sqe *sqe = sqe_of(ring);
    io_uring_prep_accept(sqe, listener, NULL, NULL, 0);
    io_uring_sqe_set_data(sqe, op_new(ACCEPT, listener));
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(listener, (struct sockaddr *)&a, sizeof a) || listen(listener, 128)) {
        perror("bind/listen");
        return 1;
    }
    struct io_uring ring;
    if (io_uring_queue_init(64, &ring, 0) < 0) {
        fprintf(stderr, "io_uring_queue_init failed\n");
        return 1;
    }
    want_accept(&ring, listener);
    for (;;) {
        io_uring_submit(&ring);
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe(&ring, &cqe) < 0) continue;
        struct op *o = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&ring, cqe);
        struct io_uring_sqe *sqe;
        switch (o->kind) {
        case ACCEPT:
            want_accept(&ring, listener);
            if (res >= 0) {
                struct op *r = op_new(RECV, res);
                sqe = sqe_of(&ring);
                io_uring_prep_recv(sqe, res, r->buf, sizeof r->buf, 0);
                io_uring_sqe_set_data(sqe, r);
            }
            free(o);
            break;
        case RECV:
            if (res > 0) {
                o->kind = SEND;
                sqe = sqe_of(&ring);
                io_uring_prep_send(sqe, o->fd, answer, sizeof answer - 1, 0);
                io_uring_sqe_set_data(sqe, o);
                break;
            }
            /* fall through: the peer went away */
        case SEND:
            o->kind = CLOSE;
            sqe = sqe_of(&ring);
            io_uring_prep_close(sqe, o->fd);
            io_uring_sqe_set_data(sqe, o);
            break;
        default:
            free(o);
        }
    }
}

/* An HTTP server that, on each accepted connection, first makes a 32-bit syscall from 64-bit
 * code: int $0x80 with eax = 3, which is read(2) in the 32-bit table (here of 0 bytes) but
 * close(2) in the 64-bit one, with the socket in both tables' first-argument registers (ebx
 * there, rdi here), as a target would that tries to pass it off as a close. Then it reads the
 * request and answers 200 as usual.
 * Usage: compat_server PORT */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static long compat_read_nothing(int fd) {
    long ret;
    __asm__ volatile("int $0x80"
                     : "=a"(ret)
                     : "a"(3L), "b"((long)fd), "c"(0L), "d"(0L), "D"((long)fd)
                     : "memory");
    return ret;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 64)) return 1;
    static const char resp[] =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
        "Connection: close\r\n\r\n{\"ok\":true}";
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) continue;
        compat_read_nothing(c);
        char buf[4096];
        size_t got = 0;
        while (got < sizeof buf - 1) {
            ssize_t n = read(c, buf + got, sizeof buf - 1 - got);
            if (n <= 0) break;
            got += (size_t)n;
            buf[got] = 0;
            if (strstr(buf, "\r\n\r\n")) break;
        }
        if (got) write(c, resp, sizeof resp - 1);
        close(c);
    }
}

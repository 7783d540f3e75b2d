// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * echo: a minimal /dev/vmcs echo server and client in C, using only include/vmcs.h.
 *
 *   echo server PORT             accept connections; send every message back
 *   echo client CID PORT [TEXT]  send TEXT (default "hello"), print the reply
 *
 * Build: cc -Wall -Wextra -Werror -I userspace-tool/include -o echo echo.c
 * (the vmcs-sys crate's tests compile it so; see vmcs-sys/tests/c_header.rs).
 *
 * Each write() on a connected /dev/vmcs file is one message of at most
 * VMCS_MAX_MSG_SIZE bytes and each read() returns one message; 0 is end of stream.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vmcs.h"

static char buf[VMCS_MAX_MSG_SIZE];

static int open_vmcs(void)
{
	int fd = open("/dev/vmcs", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		if (errno == ENOENT)
			fprintf(stderr, "echo: no /dev/vmcs: the vmcs module is not loaded\n");
		else if (errno == ENODEV)
			fprintf(stderr, "echo: no ivshmem device is bound to vmcs\n");
		else
			perror("echo: open /dev/vmcs");
		exit(3);
	}
	return fd;
}

static int serve(unsigned int port)
{
	struct vmcs_addr addr = { .cid = VMCS_CID_ANY, .port = port };
	__u32 backlog = 16;
	int lfd = open_vmcs();

	if (ioctl(lfd, VMCS_IOC_BIND, &addr) < 0 || ioctl(lfd, VMCS_IOC_LISTEN, &backlog) < 0) {
		perror("echo: bind/listen");
		return 1;
	}
	printf("listening on %u:%u\n", addr.cid, addr.port);
	fflush(stdout);
	for (;;) {
		struct vmcs_accept acc = { .flags = O_CLOEXEC };
		int cfd = ioctl(lfd, VMCS_IOC_ACCEPT, &acc);
		ssize_t n;

		if (cfd < 0) {
			if (errno == EINTR)
				continue;
			perror("echo: accept");
			return 1;
		}
		printf("connection from %u:%u\n", acc.peer.cid, acc.peer.port);
		fflush(stdout);
		while ((n = read(cfd, buf, sizeof(buf))) > 0) {
			if (write(cfd, buf, (size_t)n) != n) {
				perror("echo: write");
				break;
			}
		}
		if (n < 0)
			perror("echo: read");
		close(cfd);
	}
}

static int client(unsigned int cid, unsigned int port, const char *text)
{
	struct vmcs_connect c = { .addr = { .cid = cid, .port = port }, .timeout_ms = 0, .flags = 0 };
	struct vmcs_names names;
	size_t len = strlen(text);
	ssize_t n;
	int fd = open_vmcs();

	if (len > VMCS_MAX_MSG_SIZE) {
		fprintf(stderr, "echo: message longer than %d bytes\n", VMCS_MAX_MSG_SIZE);
		return 2;
	}
	if (ioctl(fd, VMCS_IOC_CONNECT, &c) < 0) {
		if (errno == EHOSTUNREACH)
			fprintf(stderr, "echo: peer %u is absent\n", cid);
		else if (errno == ECONNREFUSED)
			fprintf(stderr, "echo: nothing listens on %u:%u\n", cid, port);
		else
			perror("echo: connect");
		return 4;
	}
	if (ioctl(fd, VMCS_IOC_GET_NAMES, &names) == 0)
		fprintf(stderr, "connected %u:%u -> %u:%u\n", names.local.cid, names.local.port,
			names.remote.cid, names.remote.port);
	if (write(fd, text, len) != (ssize_t)len) {
		perror("echo: write");
		return 1;
	}
	n = read(fd, buf, sizeof(buf));
	if (n < 0) {
		perror("echo: read");
		return 1;
	}
	printf("%.*s\n", (int)n, buf);
	return ioctl(fd, VMCS_IOC_SHUTDOWN, &(__u32){ 2 /* SHUT_RDWR */ }) < 0 && errno != ENOTCONN;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "server") == 0)
		return serve((unsigned int)strtoul(argv[2], NULL, 0));
	if ((argc == 4 || argc == 5) && strcmp(argv[1], "client") == 0)
		return client((unsigned int)strtoul(argv[2], NULL, 0),
			      (unsigned int)strtoul(argv[3], NULL, 0), argc == 5 ? argv[4] : "hello");
	fprintf(stderr, "usage: %s server PORT | %s client CID PORT [TEXT]\n", argv[0], argv[0]);
	return 2;
}

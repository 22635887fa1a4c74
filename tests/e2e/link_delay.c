/* link-delay QUEUE DELAY_MS: holds every packet iptables sends to NFQUEUE number QUEUE for
 * DELAY_MS, then lets it go, in order. The link tests use it for latency because this
 * kernel has no netem qdisc; loss and cuts are iptables rules (statistic, DROP).
 * Runs until SIGTERM. */
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include <libnetfilter_queue/libnetfilter_queue.h>

#define HELD_MAX 65536

struct held {
	uint32_t id;
	double due;
};

static struct held ring[HELD_MAX];
static size_t head, count;
static double delay_s;
static volatile sig_atomic_t stopping;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa, void *data)
{
	struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
	if (!ph)
		return 0;
	uint32_t id = ntohl(ph->packet_id);
	if (count == HELD_MAX) /* full: a real link's queue would drop it */
		return nfq_set_verdict(qh, id, NF_DROP, 0, NULL);
	ring[(head + count++) % HELD_MAX] = (struct held){ id, now_s() + delay_s };
	return 0;
}

static void release_due(struct nfq_q_handle *qh)
{
	double now = now_s();
	while (count && ring[head].due <= now) {
		nfq_set_verdict(qh, ring[head].id, NF_ACCEPT, 0, NULL);
		head = (head + 1) % HELD_MAX;
		count--;
	}
}

static void on_term(int sig)
{
	stopping = 1;
}

int main(int argc, char **argv)
{
	char *end_queue = NULL, *end_delay = NULL;
	long queue = argc == 3 ? strtol(argv[1], &end_queue, 10) : -1;
	long delay_ms = argc == 3 ? strtol(argv[2], &end_delay, 10) : -1;
	bool bad = argc != 3 || *end_queue || *end_delay;
	if (bad || queue < 0 || queue > 65535 || delay_ms < 0 || delay_ms > 60000) {
		fprintf(stderr, "usage: %s QUEUE DELAY_MS (QUEUE 0-65535, DELAY_MS 0-60000)\n", argv[0]);
		return 64;
	}
	delay_s = (double)delay_ms / 1000.0;
	struct nfq_handle *h = nfq_open();
	struct nfq_q_handle *qh = h ? nfq_create_queue(h, (uint16_t)queue, on_packet, NULL) : NULL;
	if (!qh || nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0 || nfq_set_queue_maxlen(qh, HELD_MAX) < 0) {
		fprintf(stderr, "link-delay: cannot bind NFQUEUE %s: %m\n", argv[1]);
		return 69;
	}
	struct sigaction sa = { .sa_handler = on_term };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	int fd = nfq_fd(h);
	char buf[65536] __attribute__((aligned));
	fprintf(stderr, "link-delay: queue %s, %s ms\n", argv[1], argv[2]);
	while (!stopping) {
		int wait_ms = count ? (int)((ring[head].due - now_s()) * 1000.0) + 1 : 1000;
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, wait_ms < 0 ? 0 : wait_ms) > 0) {
			ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (n > 0)
				nfq_handle_packet(h, buf, (int)n);
		}
		release_due(qh);
	}
	for (; count; count--, head = (head + 1) % HELD_MAX) /* let what is held go */
		nfq_set_verdict(qh, ring[head].id, NF_ACCEPT, 0, NULL);
	nfq_destroy_queue(qh);
	nfq_close(h);
	return 0;
}

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/random.h>

#include "agent/connshare.h"

struct connshare_conn {
	struct client *cl;	/* NULL: of no known client */
	void *owner;
	bool idle;
	TAILQ_ENTRY(connshare_conn) entry;	/* in cl->idle while idle */
};

struct client {
	uint8_t key[16];
	size_t n, n_idle;
	TAILQ_HEAD(, connshare_conn) idle;	/* the longest idle first */
	struct client *next;			/* in its hash chain */
	size_t listed;				/* in heavy[listed]; 0: in none */
	TAILQ_ENTRY(client) entry;
};

TAILQ_HEAD(client_list, client);

struct connshare {
	struct client **chain;
	size_t mask;
	uint64_t seed;		/* keyed hash: many addresses cannot be aimed at one chain */
	size_t max, joined;
	/* heavy[k]: clients holding k >= 2 connections, one of them idle, in order of listing */
	struct client_list *heavy;
	size_t top;		/* the highest k with heavy[k] not empty; 0: none */
};

int connshare_new(size_t max, struct connshare **out)
{
	struct connshare *cs;
	size_t chains = 8;

	*out = NULL;
	if (!max)
		return -EINVAL;
	while (chains < max && chains < ((size_t)1 << 20))
		chains <<= 1;
	if (!(cs = calloc(1, sizeof(*cs))) || !(cs->chain = calloc(chains, sizeof(*cs->chain))) ||
		!(cs->heavy = calloc(max + 1, sizeof(*cs->heavy)))) {
		if (cs)
			free(cs->chain);
		free(cs);
		return -ENOMEM;
	}
	for (size_t k = 0; k <= max; k++)
		TAILQ_INIT(&cs->heavy[k]);
	if (getrandom(&cs->seed, sizeof(cs->seed), 0) != sizeof(cs->seed))
		cs->seed = (uint64_t)(uintptr_t)cs ^ 0x9e3779b97f4a7c15ULL;
	cs->mask = chains - 1;
	cs->max = max;
	*out = cs;
	return 0;
}

void connshare_free(struct connshare **cs)
{
	if (!cs || !*cs)
		return;
	for (size_t i = 0; i <= (*cs)->mask; i++)
		while ((*cs)->chain[i]) {
			struct client *cl = (*cs)->chain[i];

			(*cs)->chain[i] = cl->next;
			free(cl);
		}
	free((*cs)->chain);
	free((*cs)->heavy);
	free(*cs);
	*cs = NULL;
}

/* FNV-1a, seeded. */
static struct client **chain_of(const struct connshare *cs, const uint8_t key[16])
{
	uint64_t h = 0xcbf29ce484222325ULL ^ cs->seed;

	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 0x100000001b3ULL;
	return &cs->chain[(size_t)(h ^ (h >> 32)) & cs->mask];
}

/* cl's count or idleness changed: into the list its count names, or out of them all. */
static void relist(struct connshare *cs, struct client *cl)
{
	size_t k = cl->n >= 2 && cl->n_idle ? cl->n : 0;

	if (k == cl->listed)
		return;
	if (cl->listed)
		TAILQ_REMOVE(&cs->heavy[cl->listed], cl, entry);
	cl->listed = k;
	if (k) {
		TAILQ_INSERT_TAIL(&cs->heavy[k], cl, entry);
		if (k > cs->top)
			cs->top = k;
	}
	while (cs->top && TAILQ_EMPTY(&cs->heavy[cs->top]))
		cs->top--;
}

int connshare_join(struct connshare *cs, const uint8_t key[16], void *owner,
	struct connshare_conn **out)
{
	struct client **head, *cl = NULL;

	*out = NULL;
	if (cs->joined == cs->max)
		return -ENOSPC;
	if (!(*out = calloc(1, sizeof(**out))))
		return -ENOMEM;
	(*out)->owner = owner;
	cs->joined++;
	if (!key)
		return 0;
	head = chain_of(cs, key);
	for (cl = *head; cl && memcmp(cl->key, key, sizeof(cl->key)); cl = cl->next)
		;
	if (!cl) {
		if (!(cl = calloc(1, sizeof(*cl)))) {
			free(*out);
			*out = NULL;
			cs->joined--;
			return -ENOMEM;
		}
		memcpy(cl->key, key, sizeof(cl->key));
		TAILQ_INIT(&cl->idle);
		cl->next = *head;
		*head = cl;
	}
	cl->n++;
	(*out)->cl = cl;
	relist(cs, cl);
	return 0;
}

void connshare_leave(struct connshare *cs, struct connshare_conn **c)
{
	struct client *cl, **p;

	if (!c || !*c)
		return;
	connshare_idle(cs, *c, false);
	cl = (*c)->cl;
	cs->joined--;
	free(*c);
	*c = NULL;
	if (!cl)
		return;
	cl->n--;
	relist(cs, cl);
	if (cl->n)
		return;
	for (p = chain_of(cs, cl->key); *p != cl; p = &(*p)->next)
		;
	*p = cl->next;
	free(cl);
}

void connshare_idle(struct connshare *cs, struct connshare_conn *c, bool idle)
{
	struct client *cl = c->cl;

	if (cl && c->idle) {
		TAILQ_REMOVE(&cl->idle, c, entry);
		cl->n_idle--;
	}
	c->idle = idle;
	if (!cl)
		return;
	if (idle) {
		TAILQ_INSERT_TAIL(&cl->idle, c, entry);
		cl->n_idle++;
	}
	relist(cs, cl);
}

void *connshare_victim(const struct connshare *cs)
{
	const struct client *cl;

	if (!cs->top)
		return NULL;
	cl = TAILQ_FIRST(&cs->heavy[cs->top]);
	return TAILQ_FIRST(&cl->idle)->owner;
}

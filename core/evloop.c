/*
 * The event loop: one thread blocked in epoll_wait, serving timers
 * (timerfd), eventfds and console backends. Devices reach it through the
 * machine's clock (timers) and mb_machine_watch() (file descriptors).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"
#include "moonbox/sandbox.h"

struct watch {
	int fd;
	bool dead, timer;
	void (*cb)(void *opaque, int fd);
	void *opaque;
	struct watch *next; /* every watch, freed with the loop */
};

struct mb_timer {
	struct watch w;
	struct mb_evloop *ev;
	void (*cb)(void *opaque);
	void *opaque;
	uint64_t deadline; /* in the clock's time; 0: disarmed (under ev->lock) */
};

/* The machine's clock is CLOCK_MONOTONIC less the time the machine spent
 * frozen (held at a stop): guest timers resume with the time that was
 * left instead of firing all at once. Guarded by lock. */
struct mb_evloop {
	int ep, quit;
	bool stopped;
	pthread_t thread;
	pthread_mutex_t lock;
	struct watch *all;
	bool frozen;
	_Atomic(struct mb_machine *) sc; /* seccomp.c: filter this thread */
	uint64_t frozen_at; /* monotonic ns when frozen */
	uint64_t offset;    /* monotonic ns the clock lost to freezes */
};

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *loop(void *arg)
{
	struct mb_evloop *ev = arg;
	struct epoll_event evs[32];
	for (;;) {
		int n = epoll_wait(ev->ep, evs, 32, -1);
		if (n < 0 && errno != EINTR)
			break;
		mb_seccomp_point(atomic_load(&ev->sc), MB_THREAD_EVLOOP);
		for (int i = 0; i < n; i++) {
			struct watch *w = evs[i].data.ptr;
			if (!w)
				return NULL; /* the quit eventfd */
			if (w->dead)
				continue;
			if (w->timer) {
				uint64_t ticks;
				struct mb_timer *t = (struct mb_timer *)w;
				if (read(w->fd, &ticks, 8) != 8 || w->dead)
					continue;
				/* Expired: forget the deadline, unless a
				 * timer_mod since moved it later. */
				pthread_mutex_lock(&ev->lock);
				if (t->deadline &&
				    t->deadline + ev->offset <= mono_ns())
					t->deadline = 0;
				pthread_mutex_unlock(&ev->lock);
				t->cb(t->opaque);
			} else {
				w->cb(w->opaque, w->fd);
			}
		}
	}
	return NULL;
}

struct mb_evloop *mb_evloop_new(void)
{
	struct mb_evloop *ev = calloc(1, sizeof *ev);
	if (!ev)
		return NULL;
	pthread_mutex_init(&ev->lock, NULL);
	ev->ep = epoll_create1(EPOLL_CLOEXEC);
	ev->quit = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct epoll_event e = { .events = EPOLLIN, .data.ptr = NULL };
	if (ev->ep < 0 || ev->quit < 0 ||
	    epoll_ctl(ev->ep, EPOLL_CTL_ADD, ev->quit, &e) ||
	    pthread_create(&ev->thread, NULL, loop, ev)) {
		if (ev->ep >= 0)
			close(ev->ep);
		if (ev->quit >= 0)
			close(ev->quit);
		free(ev);
		return NULL;
	}
	return ev;
}

void mb_evloop_seccomp(struct mb_evloop *ev, struct mb_machine *m)
{
	atomic_store(&ev->sc, m);
}

bool mb_evloop_is_self(struct mb_evloop *ev)
{
	return ev && pthread_equal(ev->thread, pthread_self());
}

/* Stop the thread: no callback runs after this; timers stay valid (and
 * may still be disarmed and freed) until mb_evloop_free(). */
void mb_evloop_stop(struct mb_evloop *ev)
{
	if (!ev || ev->stopped)
		return;
	uint64_t one = 1;
	if (write(ev->quit, &one, 8) != 8)
		pthread_cancel(ev->thread);
	pthread_join(ev->thread, NULL);
	ev->stopped = true;
}

void mb_evloop_free(struct mb_evloop *ev)
{
	if (!ev)
		return;
	mb_evloop_stop(ev);
	for (struct watch *w = ev->all, *n; w; w = n) {
		n = w->next;
		if (w->timer && w->fd >= 0)
			close(w->fd);
		free(w);
	}
	close(ev->ep);
	close(ev->quit);
	free(ev);
}

static void track(struct mb_evloop *ev, struct watch *w)
{
	pthread_mutex_lock(&ev->lock);
	w->next = ev->all;
	ev->all = w;
	pthread_mutex_unlock(&ev->lock);
}

int mb_evloop_watch(struct mb_evloop *ev, int fd,
		    void (*cb)(void *opaque, int fd), void *opaque)
{
	struct watch *w = calloc(1, sizeof *w);
	if (!w)
		return mb_seterr(-ENOMEM, "event loop: out of memory");
	w->fd = fd, w->cb = cb, w->opaque = opaque;
	struct epoll_event e = { .events = EPOLLIN, .data.ptr = w };
	if (epoll_ctl(ev->ep, EPOLL_CTL_ADD, fd, &e)) {
		int err = errno;
		free(w);
		return mb_seterr(-err, "event loop: cannot watch fd %d: %s", fd,
				 strerror(err));
	}
	track(ev, w);
	return 0;
}

void mb_evloop_unwatch(struct mb_evloop *ev, int fd)
{
	pthread_mutex_lock(&ev->lock);
	for (struct watch *w = ev->all; w; w = w->next)
		if (!w->timer && w->fd == fd && !w->dead) {
			w->dead = true;
			epoll_ctl(ev->ep, EPOLL_CTL_DEL, fd, NULL);
		}
	pthread_mutex_unlock(&ev->lock);
}

/* The real clock: CLOCK_MONOTONIC less the frozen time, timers as
 * timerfds on the loop. */
static uint64_t clk_now(const struct mb_clock *c)
{
	struct mb_evloop *ev = c->ctx;
	pthread_mutex_lock(&ev->lock);
	uint64_t t = (ev->frozen ? ev->frozen_at : mono_ns()) - ev->offset;
	pthread_mutex_unlock(&ev->lock);
	return t;
}

static struct mb_timer *clk_timer_new(const struct mb_clock *c,
				      void (*cb)(void *), void *opaque)
{
	struct mb_evloop *ev = c->ctx;
	struct mb_timer *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	t->w.timer = true;
	t->ev = ev;
	t->cb = cb, t->opaque = opaque;
	t->w.fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	struct epoll_event e = { .events = EPOLLIN, .data.ptr = &t->w };
	if (t->w.fd < 0 || epoll_ctl(ev->ep, EPOLL_CTL_ADD, t->w.fd, &e)) {
		if (t->w.fd >= 0)
			close(t->w.fd);
		free(t);
		return NULL;
	}
	track(ev, &t->w);
	return t;
}

/* With ev->lock held: the timerfd armed at monotonic `at` (0 disarms). */
static void arm(struct mb_timer *t, uint64_t at)
{
	struct itimerspec its = { 0 };
	if (at) {
		its.it_value.tv_sec = at / 1000000000u;
		its.it_value.tv_nsec = at % 1000000000u;
	}
	timerfd_settime(t->w.fd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void clk_timer_mod(struct mb_timer *t, uint64_t deadline)
{
	struct mb_evloop *ev = t->ev;
	pthread_mutex_lock(&ev->lock);
	t->deadline = deadline;
	/* frozen: armed when the clock runs again */
	arm(t, deadline && !ev->frozen ? deadline + ev->offset : 0);
	pthread_mutex_unlock(&ev->lock);
}

/* Disarm for good; the memory stays until the loop is freed, so a callback
 * already under way never sees freed memory. */
static void clk_timer_free(struct mb_timer *t)
{
	if (!t)
		return;
	clk_timer_mod(t, 0);
	t->w.dead = true;
}

void mb_evloop_freeze(struct mb_evloop *ev, bool frozen)
{
	pthread_mutex_lock(&ev->lock);
	if (frozen == ev->frozen) {
		pthread_mutex_unlock(&ev->lock);
		return;
	}
	uint64_t now = mono_ns();
	if (frozen)
		ev->frozen_at = now;
	else
		ev->offset += now - ev->frozen_at;
	ev->frozen = frozen;
	for (struct watch *w = ev->all; w; w = w->next) {
		struct mb_timer *t = (struct mb_timer *)w;
		if (w->timer && !w->dead && t->deadline)
			arm(t, frozen ? 0 : t->deadline + ev->offset);
	}
	pthread_mutex_unlock(&ev->lock);
}

bool mb_evloop_frozen(struct mb_evloop *ev)
{
	pthread_mutex_lock(&ev->lock);
	bool f = ev->frozen;
	pthread_mutex_unlock(&ev->lock);
	return f;
}

void mb_evloop_clock(struct mb_evloop *ev, struct mb_clock *c)
{
	c->now = clk_now;
	c->timer_new = clk_timer_new;
	c->timer_mod = clk_timer_mod;
	c->timer_free = clk_timer_free;
	c->ctx = ev;
}

/* The live dashboard of `dptrain train --serve [HOST:]PORT`: a small HTTP
 * server (libmicrohttpd, its own thread) that shows the progress records
 * while training runs. It is one more consumer of the progress queue's
 * records, on the client side: serve_record copies a record into a bounded
 * store under a short lock and wakes the connections waiting for it; the
 * pages and event streams are written by the server's thread, so neither a
 * worker nor the reporting thread ever waits on a browser.
 *
 *   GET /               the page (self-contained HTML, inline script/style)
 *   GET /events         text/event-stream: the records as they come (batches,
 *                       id = the last record's number; Last-Event-ID resumes)
 *   GET /progress.json  the records so far, the run's settings and state */
#ifndef DPT_CLI_SERVE_H
#define DPT_CLI_SERVE_H

#include "dptrain/train.h"

#include <signal.h>
#include <stddef.h>

typedef struct serve serve;

/* 1 when this dptrain was built with libmicrohttpd (--serve works). */
int serve_available(void);

/* Parse "[HOST:]PORT" (HOST may be a name, an IPv4 address or a bracketed
 * IPv6 one; default 127.0.0.1; PORT 0 to 65535, 0 = any free port) into
 * host (cap bytes) and *port. On error prints "dptrain: --serve: ..." and
 * returns 1. */
int serve_parse(const char *text, char *host, size_t cap, int *port);

/* Resolve host, bind and listen on it, start the server thread. Prints a
 * warning on stderr when the address is not a loopback one. Returns NULL
 * after printing "dptrain: --serve ...: <reason>". */
serve *serve_start(const char *host, int port);

/* The URL to print ("http://127.0.0.1:41234/"), valid until serve_stop. */
const char *serve_url(const serve *s);

/* The run's settings as a JSON object text (copied); shown by the page and
 * in /progress.json. */
void serve_set_settings(serve *s, const char *json);

/* Append a record (the progress callback's thread); never blocks on a
 * client. NULL s does nothing. */
void serve_record(serve *s, const dpt_progress *p);

/* The end of the run: state "finished", "failed" or "interrupted", with a
 * message (may be NULL) shown on the page. */
void serve_finish(serve *s, const char *state, const char *message);

/* Keep answering for linger_s seconds (0: none) unless *stop becomes set,
 * then end every stream, stop the server and free s. NULL does nothing. */
void serve_stop(serve *s, double linger_s, volatile sig_atomic_t *stop);

#endif

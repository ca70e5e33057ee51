/* offerings — a small REST service over MariaDB, the pytest-multiarch example application.
 *
 *   GET  /offerings        all offerings, ordered by id (JSON array)
 *   GET  /offerings/{id}   one offering; 404 when absent
 *   POST /offerings        {"name": "...", "price": "12.50", "description": "..."}: 201 + Location
 *   GET  /healthz          200 when the database answers SELECT 1, 503 when it does not
 *
 * Configuration comes from the environment: OFFERINGS_DB_HOST, OFFERINGS_DB_PORT, OFFERINGS_DB_USER,
 * OFFERINGS_DB_PASSWORD, OFFERINGS_DB_NAME and OFFERINGS_LISTEN_PORT.
 *
 * Every request opens its own database connection, so the service never holds a broken one and an
 * unreachable database becomes a 503 answer instead of a crash.  Requests are served one at a time
 * by libmicrohttpd's polling thread, which keeps the code free of locks.  Prices travel as strings
 * (DECIMAL), never through a double.  Output keys are always in the same order.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>
#include <mysql.h>

#define OFFERINGS_VERSION "1.0"
#define MAX_BODY 16384            /* request bodies larger than this get 413 */
#define MAX_NAME 200              /* bytes, as the column */
#define MAX_DESC 2000
#define MAX_PRICE 16              /* up to 10 digits, '.', 2 digits */
#define MAX_OUTPUT (4u << 20)     /* a response never grows past this */
#define LIST_LIMIT 1000
#define COLUMNS "id, name, price, description"

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS offerings ("
    " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " name VARCHAR(200) NOT NULL,"
    " price DECIMAL(12,2) NOT NULL,"
    " description VARCHAR(2000) NULL"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

static struct {
    const char *host, *user, *password, *name;
    unsigned port, listen_port;
} cfg;
static int schema_ready;

/* ---- a growable output buffer with a hard ceiling ---- */
struct buf { char *data; size_t len, cap; int failed; };

static void buf_add(struct buf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (n > MAX_OUTPUT - b->len) { b->failed = 1; return; }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) { b->failed = 1; return; }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_json_string(struct buf *b, const char *s, size_t n) {
    size_t run = 0; /* plain bytes are copied in runs, escapes one at a time */
    buf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f) continue;
        buf_add(b, s + run, i - run);
        char esc[8];
        if (c == '"' || c == '\\') snprintf(esc, sizeof esc, "\\%c", c);
        else if (c == '\n') snprintf(esc, sizeof esc, "\\n");
        else snprintf(esc, sizeof esc, "\\u%04x", c);
        buf_str(b, esc);
        run = i + 1;
    }
    buf_add(b, s + run, n - run);
    buf_add(b, "\"", 1);
}

/* ---- replies ---- */
struct reply { unsigned status; struct buf body; char location[48]; };

static void reply_error(struct reply *r, unsigned status, const char *error, const char *detail) {
    r->status = status;
    free(r->body.data);
    memset(&r->body, 0, sizeof r->body);
    buf_str(&r->body, "{\"error\":");
    buf_json_string(&r->body, error, strlen(error));
    if (detail) {
        buf_str(&r->body, ",\"detail\":");
        buf_json_string(&r->body, detail, strlen(detail));
    }
    buf_str(&r->body, "}");
}

/* A lost or refused connection is the database being unreachable (503); anything else is ours. */
static void reply_db_error(struct reply *r, MYSQL *m) {
    unsigned err = mysql_errno(m);
    if (err >= 2000 && err < 3000) reply_error(r, 503, "database unreachable", mysql_error(m));
    else reply_error(r, 500, "database error", mysql_error(m));
}

/* ---- database ---- */
static MYSQL *db_connect(struct reply *r) {
    MYSQL *m = mysql_init(NULL);
    if (!m) { reply_error(r, 500, "out of memory", NULL); return NULL; }
    unsigned connect_timeout = 3, io_timeout = 10;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &io_timeout);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &io_timeout);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (!mysql_real_connect(m, cfg.host, cfg.user, cfg.password, cfg.name, cfg.port, NULL, 0)) {
        reply_error(r, 503, "database unreachable", mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    if (!schema_ready) {
        if (mysql_query(m, SCHEMA)) { reply_db_error(r, m); mysql_close(m); return NULL; }
        schema_ready = 1;
    }
    return m;
}

static void row_json(struct buf *b, MYSQL_ROW row, const unsigned long *len) {
    buf_str(b, "{\"id\":");
    buf_add(b, row[0], len[0]); /* digits from a BIGINT UNSIGNED column */
    buf_str(b, ",\"name\":");
    buf_json_string(b, row[1], len[1]);
    buf_str(b, ",\"price\":");
    buf_json_string(b, row[2], len[2]);
    buf_str(b, ",\"description\":");
    if (row[3]) buf_json_string(b, row[3], len[3]);
    else buf_str(b, "null");
    buf_str(b, "}");
}

/* Runs a SELECT of COLUMNS; as_list gives an array, otherwise the single row or 404. */
static void select_json(MYSQL *m, const char *sql, int as_list, struct reply *r) {
    if (mysql_query(m, sql)) { reply_db_error(r, m); return; }
    MYSQL_RES *res = mysql_store_result(m);
    if (!res) { reply_db_error(r, m); return; }
    MYSQL_ROW row;
    size_t count = 0;
    if (as_list) buf_str(&r->body, "[");
    while ((row = mysql_fetch_row(res))) {
        if (count++) buf_str(&r->body, ",");
        row_json(&r->body, row, mysql_fetch_lengths(res));
    }
    if (as_list) buf_str(&r->body, "]");
    mysql_free_result(res);
    if (!as_list && count == 0) reply_error(r, 404, "offering not found", NULL);
    else r->status = 200;
}

/* ---- the request body: one flat JSON object ---- */
struct offering { char name[MAX_NAME + 1], price[MAX_PRICE + 1], description[MAX_DESC + 1];
                  int has_name, has_price, has_description; };
struct cursor { const char *p, *end; };

static void ws(struct cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int lit(struct cursor *c, const char *s) {
    size_t n = strlen(s);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, s, n) != 0) return 0;
    c->p += n;
    return 1;
}

static int hex4(struct cursor *c, unsigned *v) {
    *v = 0;
    for (int i = 0; i < 4; i++, c->p++) {
        if (c->p >= c->end) return 0;
        char h = *c->p;
        unsigned d = h >= '0' && h <= '9' ? (unsigned)(h - '0')
                   : h >= 'a' && h <= 'f' ? (unsigned)(h - 'a' + 10)
                   : h >= 'A' && h <= 'F' ? (unsigned)(h - 'A' + 10) : 16u;
        if (d == 16) return 0;
        *v = *v << 4 | d;
    }
    return 1;
}

static size_t utf8_encode(unsigned cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12); out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18); out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F)); return 4;
}

/* Decodes a JSON string into out (NUL-terminated).  Returns the length, -1 for malformed
 * JSON, -2 when the text does not fit in cap - 1 bytes (the cursor still moves past it). */
static long parse_string(struct cursor *c, char *out, size_t cap) {
    size_t n = 0;
    int too_long = 0;
    if (!lit(c, "\"")) return -1;
    while (c->p < c->end && *c->p != '"') {
        char tmp[4];
        size_t k = 1;
        unsigned char ch = (unsigned char)*c->p++;
        tmp[0] = (char)ch;
        if (ch < 0x20) return -1;
        if (ch == '\\') {
            if (c->p >= c->end) return -1;
            unsigned cp;
            switch (*c->p++) {
            case '"': tmp[0] = '"'; break;
            case '\\': tmp[0] = '\\'; break;
            case '/': tmp[0] = '/'; break;
            case 'b': tmp[0] = '\b'; break;
            case 'f': tmp[0] = '\f'; break;
            case 'n': tmp[0] = '\n'; break;
            case 'r': tmp[0] = '\r'; break;
            case 't': tmp[0] = '\t'; break;
            case 'u':
                if (!hex4(c, &cp) || cp == 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) return -1;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (!lit(c, "\\u") || !hex4(c, &lo) || lo < 0xDC00 || lo > 0xDFFF) return -1;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                k = utf8_encode(cp, tmp);
                break;
            default: return -1;
            }
        }
        if (n + k >= cap) too_long = 1;
        else { memcpy(out + n, tmp, k); n += k; }
    }
    if (!lit(c, "\"")) return -1;
    out[n] = '\0';
    return too_long ? -2 : (long)n;
}

/* Unknown keys may carry strings, numbers, booleans or null; nothing nested. */
static int skip_scalar(struct cursor *c) {
    char scratch[MAX_DESC + 1];
    if (c->p < c->end && *c->p == '"') return parse_string(c, scratch, sizeof scratch) != -1;
    if (lit(c, "true") || lit(c, "false") || lit(c, "null")) return 1;
    const char *start = c->p;
    while (c->p < c->end && strchr("+-.0123456789eE", *c->p)) c->p++;
    return c->p > start;
}

static int utf8_valid(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t k = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3
                 : (*p & 0xF8) == 0xF0 ? 4 : 0;
        if (k == 0 || (k == 2 && *p < 0xC2) || (k == 4 && *p > 0xF4)) return 0;
        for (size_t i = 1; i < k; i++) if ((p[i] & 0xC0) != 0x80) return 0;
        p += k;
    }
    return 1;
}

/* DECIMAL(12,2): 1-10 digits, optionally '.' and 1-2 digits; no sign, no exponent. */
static int price_valid(const char *s) {
    size_t whole = strspn(s, "0123456789");
    if (whole < 1 || whole > 10) return 0;
    if (s[whole] == '\0') return 1;
    size_t frac = strspn(s + whole + 1, "0123456789");
    return s[whole] == '.' && frac >= 1 && frac <= 2 && s[whole + 1 + frac] == '\0';
}

/* Returns NULL when o is a valid offering, else what is wrong with the body. */
static const char *parse_offering(const char *body, size_t len, struct offering *o) {
    struct cursor c = {body, body + len};
    char key[32];
    ws(&c);
    if (!lit(&c, "{")) return "the body must be a JSON object";
    ws(&c);
    if (!lit(&c, "}")) {
        for (;;) {
            long n, kn;
            ws(&c);
            if ((kn = parse_string(&c, key, sizeof key)) == -1) return "malformed JSON";
            ws(&c);
            if (!lit(&c, ":")) return "malformed JSON";
            ws(&c);
            if (kn >= 0 && strcmp(key, "name") == 0) {
                if ((n = parse_string(&c, o->name, sizeof o->name)) == -2) return "name is longer than 200 bytes";
                if (n < 0) return "name must be a JSON string (valid escapes, no \\u0000)";
                o->has_name = 1;
            } else if (kn >= 0 && strcmp(key, "price") == 0) {
                if ((n = parse_string(&c, o->price, sizeof o->price)) == -1)
                    return "price must be a string such as \"12.50\" (a DECIMAL, never a float)";
                if (n == -2 || !price_valid(o->price)) return "price must look like 12.50 (up to 10 digits, 2 decimals)";
                o->has_price = 1;
            } else if (kn >= 0 && strcmp(key, "description") == 0) {
                if (lit(&c, "null")) o->has_description = 0;
                else if ((n = parse_string(&c, o->description, sizeof o->description)) == -2) return "description is longer than 2000 bytes";
                else if (n < 0) return "description must be a string or null";
                else o->has_description = 1;
            } else if (!skip_scalar(&c)) {
                return "malformed JSON (nested objects and arrays are not accepted)";
            }
            ws(&c);
            if (lit(&c, ",")) continue;
            if (lit(&c, "}")) break;
            return "malformed JSON";
        }
    }
    ws(&c);
    if (c.p != c.end) return "trailing data after the JSON object";
    if (!o->has_name || o->name[0] == '\0') return "name is required";
    if (!o->has_price) return "price is required";
    if (!utf8_valid(o->name) || (o->has_description && !utf8_valid(o->description))) return "text must be UTF-8";
    return NULL;
}

/* ---- routes ---- */
static void create_offering(const char *body, size_t len, struct reply *r) {
    struct offering o;
    memset(&o, 0, sizeof o);
    const char *problem = parse_offering(body, len, &o);
    if (problem) { reply_error(r, 400, "invalid offering", problem); return; }
    MYSQL *m = db_connect(r);
    if (!m) return;
    char name[2 * MAX_NAME + 1], desc[2 * MAX_DESC + 1], sql[sizeof name + sizeof desc + 128];
    mysql_real_escape_string(m, name, o.name, strlen(o.name));
    if (o.has_description) mysql_real_escape_string(m, desc, o.description, strlen(o.description));
    int n = snprintf(sql, sizeof sql, "INSERT INTO offerings (name, price, description) VALUES ('%s', '%s', %s%s%s)",
                     name, o.price, o.has_description ? "'" : "", o.has_description ? desc : "NULL",
                     o.has_description ? "'" : "");
    if (n < 0 || (size_t)n >= sizeof sql) reply_error(r, 500, "query too long", NULL);
    else if (mysql_query(m, sql)) reply_db_error(r, m);
    else {
        unsigned long long id = (unsigned long long)mysql_insert_id(m);
        snprintf(sql, sizeof sql, "SELECT " COLUMNS " FROM offerings WHERE id = %llu", id);
        select_json(m, sql, 0, r);
        if (r->status == 200) {
            r->status = 201;
            snprintf(r->location, sizeof r->location, "/offerings/%llu", id);
        }
    }
    mysql_close(m);
}

static void route(const char *method, const char *url, const char *body, size_t len, int too_large,
                  struct reply *r) {
    int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    const char *id = strncmp(url, "/offerings/", 11) == 0 ? url + 11 : NULL;
    if (strcmp(url, "/healthz") == 0) {
        if (!get) { reply_error(r, 405, "method not allowed", "use GET"); return; }
        MYSQL *m = db_connect(r);
        if (!m) return;
        if (mysql_query(m, "SELECT 1")) reply_db_error(r, m);
        else {
            mysql_free_result(mysql_store_result(m));
            r->status = 200;
            buf_str(&r->body, "{\"status\":\"ok\"}");
        }
        mysql_close(m);
    } else if (strcmp(url, "/offerings") == 0 || (id && *id == '\0')) {
        if (post && too_large) reply_error(r, 413, "request body too large", "at most 16384 bytes");
        else if (post) create_offering(body ? body : "", len, r);
        else if (!get) reply_error(r, 405, "method not allowed", "use GET or POST");
        else {
            MYSQL *m = db_connect(r);
            if (!m) return;
            select_json(m, "SELECT " COLUMNS " FROM offerings ORDER BY id LIMIT 1000", 1, r);
            mysql_close(m);
        }
    } else if (id) {
        size_t digits = strspn(id, "0123456789");
        if (!get) { reply_error(r, 405, "method not allowed", "use GET"); return; }
        if (digits == 0 || digits > 19 || id[digits] != '\0') { reply_error(r, 404, "offering not found", NULL); return; }
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT " COLUMNS " FROM offerings WHERE id = %s", id);
        MYSQL *m = db_connect(r);
        if (!m) return;
        select_json(m, sql, 0, r);
        mysql_close(m);
    } else {
        reply_error(r, 404, "no such endpoint", url);
    }
}

/* ---- libmicrohttpd glue ---- */
struct request { char *body; size_t len; int too_large; };

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **state) {
    (void)cls; (void)version;
    struct request *req = *state;
    if (!req) { /* first call: headers only */
        if (!(req = calloc(1, sizeof *req))) return MHD_NO;
        *state = req;
        return MHD_YES;
    }
    if (*upload_size) {
        if (*upload_size > MAX_BODY - req->len) req->too_large = 1;
        if (!req->too_large) {
            if (!req->body && !(req->body = malloc(MAX_BODY + 1))) return MHD_NO;
            memcpy(req->body + req->len, upload, *upload_size);
            req->len += *upload_size;
            req->body[req->len] = '\0';
        }
        *upload_size = 0;
        return MHD_YES;
    }
    struct reply r;
    memset(&r, 0, sizeof r);
    route(method, url, req->body, req->len, req->too_large, &r);
    if (r.body.failed || !r.body.data) reply_error(&r, 500, "response too large", NULL);
    fprintf(stderr, "offerings: %s %.200s -> %u\n", method, url, r.status);
    struct MHD_Response *resp = MHD_create_response_from_buffer(r.body.len, r.body.data, MHD_RESPMEM_MUST_FREE);
    if (!resp) { free(r.body.data); return MHD_NO; }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (r.location[0]) MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, r.location);
    enum MHD_Result ret = MHD_queue_response(conn, r.status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void completed(void *cls, struct MHD_Connection *conn, void **state, enum MHD_RequestTerminationCode code) {
    (void)cls; (void)conn; (void)code;
    struct request *req = *state;
    if (req) { free(req->body); free(req); *state = NULL; }
}

static unsigned env_port(const char *var, unsigned fallback) {
    const char *s = getenv(var);
    if (!s || !*s) return fallback;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v == 0 || v > 65535) {
        fprintf(stderr, "offerings: %s=%.40s is not a port number (1-65535)\n", var, s);
        exit(2);
    }
    return (unsigned)v;
}

static const char *env_or(const char *var, const char *fallback) {
    const char *s = getenv(var);
    return s && *s ? s : fallback;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("offerings %s (libmicrohttpd %s, libmariadb %s)\n", OFFERINGS_VERSION, MHD_get_version(),
               mysql_get_client_info());
        return 0;
    }
    cfg.host = env_or("OFFERINGS_DB_HOST", "db");
    cfg.port = env_port("OFFERINGS_DB_PORT", 3306);
    cfg.user = env_or("OFFERINGS_DB_USER", "offerings");
    cfg.password = env_or("OFFERINGS_DB_PASSWORD", "");
    cfg.name = env_or("OFFERINGS_DB_NAME", "offerings");
    cfg.listen_port = env_port("OFFERINGS_LISTEN_PORT", 8080);
    if (mysql_library_init(0, NULL, NULL)) { fprintf(stderr, "offerings: mysql_library_init failed\n"); return 1; }
    signal(SIGPIPE, SIG_IGN);
    /* Block the stop signals before libmicrohttpd starts its thread, then wait for them here. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)cfg.listen_port, NULL, NULL, &handle, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, &completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
        MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_END);
    if (!d) { fprintf(stderr, "offerings: cannot listen on port %u: %s\n", cfg.listen_port, strerror(errno)); return 1; }
    fprintf(stderr, "offerings %s: listening on :%u, database %s@%s:%u/%s\n", OFFERINGS_VERSION, cfg.listen_port,
            cfg.user, cfg.host, cfg.port, cfg.name);
    int sig = 0;
    sigwait(&stop, &sig);
    fprintf(stderr, "offerings: signal %d, stopping\n", sig);
    MHD_stop_daemon(d);
    mysql_library_end();
    return 0;
}

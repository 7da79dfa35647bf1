/*
 * Incremental interval energy: the per-meter pass of IntervalEngine.feed in C.
 *
 * Why C: the aggregator's goal is millions of readings per second on two cores. The
 * Polars pipelines in core.py are the reference (the report's `verify` re-runs them and
 * tests compare this kernel with them on random messy streams); they need ~20 columnar
 * passes over every reading (sorts, shifted neighbours, joins, explode, group-by). The
 * same rules fit in one pass per meter over readings already in cache.
 *
 * The rules are those of core.py, in the same order and with the same float expressions
 * (so results agree to the last bit except where Polars sums or means in another order):
 *
 *  - reads are grouped by (track, meter), sorted by time (stable: carried reads, which
 *    come first, win on a repeated timestamp), repeated timestamps dropped;
 *  - register status: invalid (NaN/inf/negative), spike (implausible step into it,
 *    plausible step over it, neighbours being the nearest finite reads), or kept; a
 *    status fixed by an earlier feed is kept;
 *  - power status: invalid (NaN/inf/negative/above rating) or kept;
 *  - register segments between consecutive kept reads (wrap corrected, reset and jump
 *    detected, reset energy filled from the mean of the meter's kept power reads inside
 *    the segment), trapezoid segments between kept power reads of integrated meters;
 *  - segments spread over intervals, rejected reads counted per interval;
 *  - an interval is emitted once no later reading can change it (the cut), the reads
 *    the open intervals still depend on are returned as the carry.
 *
 * Time is int64 microseconds; INT64_MIN stands for "none" in the per-meter marks; 255
 * for "no fixed status". The GIL is released while computing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NONE_TS INT64_MIN
#define FIXED_NONE 255
#define ST_KEPT 0
#define ST_INVALID 1
#define ST_SPIKE 2
/* Multiplied by, as core.py does (see _H_PER_US there). */
#define H_PER_US (1.0 / 3.6e9)
#define KWH_PER_W_US (1.0 / 3.6e12)

/* Interval flags, passed in from agent.schemas.IntervalFlag (one source of truth). */
typedef struct {
    uint16_t interpolated, gap, wrap, reset, rejected, estimated, imported;
} Flags;

typedef struct {
    int64_t interval_us, max_gap_us, max_power_gap_us;
    double tol1;      /* 1.0 + rating_tolerance, computed in Python as Polars does */
    double wrap_frac; /* wrap_max_fraction */
    int reset_fill;   /* 1: fill reset segments from power readings */
    Flags f;
} Config;

/* A growable array of one element type. */
typedef struct {
    char *data;
    size_t len, cap, size;
} Vec;

static int vec_reserve(Vec *v, size_t more) {
    if (v->len + more <= v->cap) return 0;
    size_t cap = v->cap ? v->cap : 1024;
    while (cap < v->len + more) cap *= 2;
    char *p = realloc(v->data, cap * v->size);
    if (!p) return -1;
    v->data = p;
    v->cap = cap;
    return 0;
}

#define VEC_PUSH(vec, type, value)                          \
    do {                                                    \
        if (vec_reserve(&(vec), 1)) goto nomem;             \
        ((type *)(vec).data)[(vec).len++] = (type)(value);  \
    } while (0)

typedef struct {
    Vec mi, k, energy, covered, flags, rejected;
} Out;

typedef struct {
    Vec mi, track, ts, value, imported, fixed;
} Carry;

/* Floor division (Polars `//` on integers). */
static inline int64_t floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static inline int64_t max_ts(int64_t a, int64_t b) {
    if (a == NONE_TS) return b;
    if (b == NONE_TS) return a;
    return a > b ? a : b;
}

typedef struct {
    double rating, modulus, resolution;
    int method; /* 0 register, 1 power integration */
} Meter;

/* (plausible increase, plausible wrap) of a register step: core._step_ok. */
static inline void step_ok(const Meter *m, const Config *c, double delta, int64_t dt, int *up,
                           int *wrap) {
    int bound_none = isnan(m->rating) || isnan(m->resolution);
    double bound = bound_none ? 0.0 : m->rating * (double)dt * H_PER_US * c->tol1 + m->resolution;
    *up = delta >= 0 && (bound_none || delta <= bound);
    if (isnan(m->modulus)) {
        *wrap = 0;
        return;
    }
    double wrapped = delta + m->modulus;
    double limit = bound_none ? m->modulus * c->wrap_frac : bound;
    *wrap = delta < 0 && wrapped >= 0 && wrapped <= limit;
}

/* Stable merge sort of idx[0..n) by ts (bottom-up, with a scratch buffer). */
static void sort_by_ts(int64_t *idx, int64_t *tmp, int64_t n, const int64_t *ts) {
    for (int64_t width = 1; width < n; width *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * width) {
            int64_t mid = lo + width < n ? lo + width : n;
            int64_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            int64_t i = lo, j = mid, o = lo;
            while (i < mid && j < hi) tmp[o++] = ts[idx[j]] < ts[idx[i]] ? idx[j++] : idx[i++];
            while (i < mid) tmp[o++] = idx[i++];
            while (j < hi) tmp[o++] = idx[j++];
        }
        memcpy(idx, tmp, (size_t)n * sizeof(int64_t));
    }
}

/* One piece of a segment inside one interval, accumulated into the meter's rows. */
typedef struct {
    int64_t k, covered;
    double energy;
    uint16_t flags;
    uint32_t rejected;
} Row;

typedef struct {
    Row *rows;
    int64_t len, cap;
} Rows;

static int rows_add(Rows *r, int64_t k, double energy, int64_t covered, uint16_t flags) {
    if (r->len > 0 && r->rows[r->len - 1].k == k) {
        Row *last = &r->rows[r->len - 1];
        last->energy += energy;
        last->covered += covered;
        last->flags |= flags;
        return 0;
    }
    if (r->len == r->cap) {
        int64_t cap = r->cap ? r->cap * 2 : 256;
        Row *p = realloc(r->rows, (size_t)cap * sizeof(Row));
        if (!p) return -1;
        r->rows = p;
        r->cap = cap;
    }
    r->rows[r->len++] = (Row){k, covered, energy, flags, 0};
    return 0;
}

/* Cut a segment at interval boundaries (core._spread). p0 is NaN for register segments. */
static int spread(Rows *r, const Config *c, int64_t t0, int64_t t1, double e_kwh, double p0,
                  double p1, int covered, uint16_t flags) {
    int64_t iv = c->interval_us;
    double span = (double)(t1 - t0);
    for (int64_t k = floordiv(t0, iv); k <= floordiv(t1 - 1, iv); k++) {
        int64_t a = t0 > k * iv ? t0 : k * iv;
        int64_t b = t1 < (k + 1) * iv ? t1 : (k + 1) * iv;
        int64_t width = b - a;
        double energy;
        if (isnan(p0)) {
            energy = e_kwh * ((double)width / span);
        } else {
            double pa = p0 + (p1 - p0) * (double)(a - t0) / span;
            double pb = p0 + (p1 - p0) * (double)(b - t0) / span;
            energy = (pa + pb) / 2.0 * (double)width * KWH_PER_W_US;
        }
        if (rows_add(r, k, energy, covered ? width : 0, flags)) return -1;
    }
    return 0;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* One read as the per-meter passes see it: 24 bytes, so the scatter into (track, meter)
 * buckets touches one array (its active lines stay in cache) instead of four. */
typedef struct {
    int64_t ts;
    double v;
    uint8_t imp, fix;
} Read;

/* Input columns: the carried reads (fixed statuses), then the fresh ones (fixed NULL). */
typedef struct {
    int64_t n;
    const uint32_t *mi;
    const uint8_t *track;
    const int64_t *ts;
    const double *value;
    const uint8_t *imported, *fixed;
} Source;

typedef struct {
    /* inputs */
    int64_t n_meters;
    Source src[2];
    const uint8_t *method;
    const double *rating, *modulus, *resolution;
    int64_t *cut, *hor_e, *hor_p; /* updated in place */
    Config c;
    /* outputs */
    Out out;
    Carry carry_e, carry_p;
    int64_t late;
    const char *error;
} Job;

static int run(Job *j) {
    const Config *c = &j->c;
    int64_t nb = 2 * j->n_meters, n = j->src[0].n + j->src[1].n, iv = c->interval_us;
    int64_t *start = calloc((size_t)nb + 1, sizeof(int64_t));
    int64_t *tmp = malloc(((size_t)n + 1) * sizeof(int64_t));
    uint8_t *keep = malloc((size_t)n + 1), *status = malloc((size_t)n + 1);
    /* The reads gathered bucket by bucket: every later pass is sequential in memory. */
    Read *g = malloc(((size_t)n + 1) * sizeof(Read));
    int64_t *rej = NULL, *len = NULL, *fill = NULL;
    int64_t rej_cap = 0;
    Rows rows = {0};
    int rc = -1;
    if (!start || !tmp || !keep || !status || !g) goto nomem;

    /* Late fresh reads dropped; (track, meter) buckets counted, then filled stably. */
    for (int k = 0, row = 0; k < 2; k++) {
        const Source *s = &j->src[k];
        for (int64_t i = 0; i < s->n; i++, row++) {
            uint32_t mi = s->mi[i];
            uint8_t track = s->track[i];
            if (mi >= (uint64_t)j->n_meters || track > 1) {
                j->error = "read with a meter index or track out of range";
                goto done;
            }
            keep[row] = 1;
            if (k == 1) {
                int64_t h = track == 0 ? j->hor_e[mi] : j->hor_p[mi];
                if (h != NONE_TS && s->ts[i] <= h) {
                    j->late++;
                    keep[row] = 0;
                    continue;
                }
            }
            start[track * j->n_meters + mi + 1]++;
        }
    }
    for (int64_t b = 0; b < nb; b++) start[b + 1] += start[b];
    fill = malloc(((size_t)nb + 1) * sizeof(int64_t));
    len = calloc((size_t)nb + 1, sizeof(int64_t));
    if (!fill || !len) goto nomem;
    memcpy(fill, start, (size_t)nb * sizeof(int64_t));
    for (int k = 0, row = 0; k < 2; k++) {
        const Source *s = &j->src[k];
        for (int64_t i = 0; i < s->n; i++, row++) {
            if (!keep[row]) continue;
            g[fill[s->track[i] * j->n_meters + s->mi[i]]++] =
                (Read){s->ts[i], s->value[i], s->imported[i], s->fixed ? s->fixed[i] : FIXED_NONE};
        }
    }
    /* Each bucket in time order, repeated timestamps dropped (the earlier row wins). */
    for (int64_t b = 0; b < nb; b++) {
        Read *r = g + start[b];
        int64_t m = start[b + 1] - start[b];
        int sorted = 1;
        for (int64_t i = 1; i < m && sorted; i++) sorted = r[i].ts >= r[i - 1].ts;
        if (!sorted) {
            /* Rare (readings of a meter out of order in one batch): sort a permutation. */
            int64_t *perm = malloc((size_t)m * 3 * sizeof(int64_t));
            Read *copy = malloc((size_t)m * sizeof(Read));
            if (!perm || !copy) {
                free(perm);
                free(copy);
                goto nomem;
            }
            int64_t *scratch = perm + m, *keys = perm + 2 * m;
            for (int64_t i = 0; i < m; i++) {
                perm[i] = i;
                keys[i] = r[i].ts;
            }
            sort_by_ts(perm, scratch, m, keys);
            memcpy(copy, r, (size_t)m * sizeof(Read));
            for (int64_t i = 0; i < m; i++) r[i] = copy[perm[i]];
            free(perm);
            free(copy);
        }
        int64_t w = 0;
        for (int64_t i = 0; i < m; i++)
            if (w == 0 || r[i].ts != r[w - 1].ts) r[w++] = r[i];
        len[b] = w;
    }

    for (int64_t mi = 0; mi < j->n_meters; mi++) {
        const Meter m = {j->rating[mi], j->modulus[mi], j->resolution[mi], j->method[mi]};
        const int64_t eo = start[mi], po = start[j->n_meters + mi];
        const Read *er = g + eo, *pr = g + po;
        int64_t ne = len[mi], np = len[j->n_meters + mi];
        uint8_t *se = status + start[mi], *sp = status + start[j->n_meters + mi];
        int64_t n_rej = 0;
        rows.len = 0;
#define REJECT(t)                                                              \
    do {                                                                       \
        if (n_rej == rej_cap) {                                                \
            rej_cap = rej_cap ? rej_cap * 2 : 256;                             \
            int64_t *p_ = realloc(rej, (size_t)rej_cap * sizeof(int64_t));     \
            if (!p_) goto nomem;                                               \
            rej = p_;                                                          \
        }                                                                      \
        rej[n_rej++] = floordiv((t), iv);                                      \
    } while (0)

        /* Register statuses (core.register_status): neighbours are the nearest finite reads. */
        {
            int64_t prev = -1;
            for (int64_t i = 0; i < ne; i++) { /* forward: stash the previous finite in tmp */
                double v = er[i].v;
                tmp[i] = prev;
                if (isfinite(v) && v >= 0) prev = i;
            }
            int64_t next = -1;
            for (int64_t i = ne - 1; i >= 0; i--) {
                int64_t r = eo + i;
                double v = g[r].v;
                int finite = isfinite(v) && v >= 0;
                if (!finite) {
                    se[i] = ST_INVALID;
                } else if (g[r].fix != FIXED_NONE) {
                    se[i] = g[r].fix;
                } else {
                    int spike = 0;
                    int64_t p = tmp[i];
                    if (p >= 0 && next >= 0) {
                        double pv = er[p].v, nv = er[next].v;
                        int64_t pt = er[p].ts, nt = er[next].ts;
                        int up1, w1, up2, w2;
                        step_ok(&m, c, v - pv, g[r].ts - pt, &up1, &w1);
                        step_ok(&m, c, nv - pv, nt - pt, &up2, &w2);
                        spike = !(up1 || w1) && (up2 || w2);
                    }
                    se[i] = spike ? ST_SPIKE : ST_KEPT;
                }
                if (finite) next = i;
            }
        }
        /* Power statuses (core.power_status). */
        double limit_w = m.rating * 1000.0 * c->tol1;
        for (int64_t i = 0; i < np; i++) {
            double v = pr[i].v;
            int valid = isfinite(v) && v >= 0 && (isnan(m.rating) || v <= limit_w);
            sp[i] = valid ? ST_KEPT : ST_INVALID;
        }

        /* Register segments (core.register_segments), spread as they are made. */
        int64_t prev = -1, pw = 0;
        for (int64_t i = 0; i < ne; i++) {
            if (se[i] != ST_KEPT) {
                REJECT(er[i].ts);
                continue;
            }
            if (prev < 0) {
                prev = i;
                continue;
            }
            int64_t r0 = eo + prev, r1 = eo + i;
            int64_t t0 = g[r0].ts, t1 = g[r1].ts, dt = t1 - t0;
            double delta = g[r1].v - g[r0].v;
            int up, wrap, down = delta < 0;
            step_ok(&m, c, delta, dt, &up, &wrap);
            double e = up ? delta : (wrap ? delta + m.modulus : 0.0);
            int covered = (up || wrap) && dt <= c->max_gap_us;
            uint16_t flags = (uint16_t)((wrap ? c->f.wrap : 0) | (!(up || wrap) ? c->f.reset : 0) |
                                        (!(up || wrap || down) ? c->f.rejected : 0) |
                                        (dt > iv ? c->f.interpolated : 0) |
                                        ((g[r0].imp || g[r1].imp) ? c->f.imported : 0));
            if (!(up || wrap || down)) REJECT(t1 - 1);
            if (!(up || wrap) && c->reset_fill) {
                /* Mean of the kept power reads in (t0, t1]: a bound from the meter's own draw. */
                while (pw < np && pr[pw].ts <= t0) pw++;
                double sum = 0.0;
                int64_t count = 0;
                for (int64_t q = pw; q < np && pr[q].ts <= t1; q++)
                    if (sp[q] == ST_KEPT) {
                        sum += pr[q].v;
                        count++;
                    }
                if (count) {
                    e = sum / (double)count * (double)(t1 - t0) * KWH_PER_W_US;
                    flags |= c->f.estimated;
                }
            }
            if (spread(&rows, c, t0, t1, e, NAN, NAN, covered, flags)) goto nomem;
            prev = i;
        }
        /* Power: rejected reads of every meter, trapezoids for integrated meters. */
        prev = -1;
        for (int64_t i = 0; i < np; i++) {
            if (sp[i] != ST_KEPT) {
                REJECT(pr[i].ts);
                continue;
            }
            if (m.method == 1 && prev >= 0) {
                int64_t r0 = po + prev, r1 = po + i;
                int64_t t0 = g[r0].ts, t1 = g[r1].ts;
                if (t1 - t0 <= c->max_power_gap_us) {
                    uint16_t flags = (uint16_t)(c->f.estimated |
                                                ((g[r0].imp || g[r1].imp) ? c->f.imported : 0));
                    if (spread(&rows, c, t0, t1, NAN, g[r0].v, g[r1].v, 1, flags))
                        goto nomem;
                }
            }
            prev = i;
        }
#undef REJECT

        /* Horizons, the new cut (engine._horizons, engine._advance_marks). */
        int64_t last = NONE_TS, he = NONE_TS, hp = NONE_TS;
        for (int64_t i = 0; i < ne; i++)
            if (se[i] != ST_INVALID) last = max_ts(last, er[i].ts);
        for (int64_t i = 0; i < ne; i++)
            if (se[i] == ST_KEPT && last != NONE_TS && er[i].ts < last)
                he = max_ts(he, er[i].ts);
        for (int64_t i = 0; i < np; i++)
            if (sp[i] == ST_KEPT) hp = max_ts(hp, pr[i].ts);
        j->hor_e[mi] = max_ts(j->hor_e[mi], he);
        j->hor_p[mi] = max_ts(j->hor_p[mi], hp);
        int64_t h = m.method == 0 ? j->hor_e[mi] : j->hor_p[mi];
        int64_t cut = j->cut[mi];
        int64_t new_cut = max_ts(cut, h == NONE_TS ? NONE_TS : floordiv(h, iv) * iv);

        /* Rows: rejected counts merged in (core.intervals_from_parts), final ones emitted. */
        if (n_rej > 1) qsort(rej, (size_t)n_rej, sizeof(int64_t), cmp_i64);
        int64_t a = 0, b = 0;
        while (a < rows.len || b < n_rej) {
            Row row;
            if (b >= n_rej || (a < rows.len && rows.rows[a].k < rej[b])) {
                row = rows.rows[a++];
            } else {
                int64_t k = rej[b];
                if (a < rows.len && rows.rows[a].k == k) {
                    row = rows.rows[a++];
                } else {
                    row = (Row){k, 0, 0.0, 0, 0};
                }
                while (b < n_rej && rej[b] == k) {
                    row.rejected++;
                    b++;
                }
            }
            if (new_cut == NONE_TS || row.k * iv >= new_cut) continue;
            if (cut != NONE_TS && row.k * iv < cut) continue;
            if (row.covered < iv) row.flags |= c->f.gap;
            if (row.rejected > 0) row.flags |= c->f.rejected;
            VEC_PUSH(j->out.mi, uint32_t, mi);
            VEC_PUSH(j->out.k, int64_t, row.k);
            VEC_PUSH(j->out.energy, double, row.energy);
            VEC_PUSH(j->out.covered, int64_t, row.covered);
            VEC_PUSH(j->out.flags, uint16_t, row.flags);
            VEC_PUSH(j->out.rejected, uint32_t, row.rejected);
        }

        /* Anchors and carry (engine._anchors, _carry_energy, _carry_power). */
        int64_t k0 = NONE_TS, p0 = NONE_TS;
        if (new_cut != NONE_TS) {
            for (int64_t i = 0; i < ne; i++)
                if (se[i] == ST_KEPT && er[i].ts <= new_cut) k0 = max_ts(k0, er[i].ts);
            for (int64_t i = 0; i < np; i++)
                if (sp[i] == ST_KEPT && pr[i].ts <= new_cut) p0 = max_ts(p0, pr[i].ts);
        }
        for (int64_t i = 0; i < ne; i++) {
            int64_t r = eo + i, t = g[r].ts;
            if (k0 != NONE_TS && t < k0) continue;
            VEC_PUSH(j->carry_e.mi, uint32_t, mi);
            VEC_PUSH(j->carry_e.track, uint8_t, 0);
            VEC_PUSH(j->carry_e.ts, int64_t, t);
            VEC_PUSH(j->carry_e.value, double, g[r].v);
            VEC_PUSH(j->carry_e.imported, uint8_t, g[r].imp);
            VEC_PUSH(j->carry_e.fixed, uint8_t, (last != NONE_TS && t < last) ? se[i] : FIXED_NONE);
        }
        for (int64_t i = 0; i < np; i++) {
            int64_t r = po + i, t = g[r].ts;
            int keep = m.method == 0 ? (k0 == NONE_TS || t > k0) : (p0 == NONE_TS || t >= p0);
            if (!keep) continue;
            VEC_PUSH(j->carry_p.mi, uint32_t, mi);
            VEC_PUSH(j->carry_p.track, uint8_t, 1);
            VEC_PUSH(j->carry_p.ts, int64_t, t);
            VEC_PUSH(j->carry_p.value, double, g[r].v);
            VEC_PUSH(j->carry_p.imported, uint8_t, g[r].imp);
            VEC_PUSH(j->carry_p.fixed, uint8_t, FIXED_NONE);
        }
        j->cut[mi] = new_cut;
    }
    rc = 0;
    goto done;
nomem:
    j->error = "out of memory";
done:
    free(start);
    free(tmp);
    free(keep);
    free(status);
    free(g);
    free(rej);
    free(rows.rows);
    free(len);
    free(fill);
    return rc;
}

/* ---- Python binding ------------------------------------------------------------------- */

static int check_len(Py_buffer *b, Py_ssize_t itemsize, Py_ssize_t n, const char *name) {
    if (b->len != itemsize * n) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items of %zd bytes, got %zd bytes", name,
                     n, itemsize, b->len);
        return -1;
    }
    return 0;
}

static PyObject *vec_bytes(const Vec *a, const Vec *b) {
    size_t na = a->len * a->size, nb = b ? b->len * b->size : 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(na + nb));
    if (!out) return NULL;
    if (na) memcpy(PyBytes_AS_STRING(out), a->data, na);
    if (nb) memcpy(PyBytes_AS_STRING(out) + na, b->data, nb);
    return out;
}

static void vec_free(Vec *v) { free(v->data); }

static PyObject *kernel_feed(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer method, rating, modulus, resolution, cut, hor_e, hor_p;
    Py_buffer c_mi, c_track, c_ts, c_value, c_imported, c_fixed;
    Py_buffer f_mi, f_track, f_ts, f_value, f_imported;
    long long interval_us, max_gap_us, max_power_gap_us;
    double tol1, wrap_frac;
    int reset_fill;
    int fl[7];
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*w*w*y*y*y*y*y*y*y*y*y*y*y*LLLddp(iiiiiii):feed",
                          &method, &rating, &modulus, &resolution, &cut, &hor_e, &hor_p, &c_mi,
                          &c_track, &c_ts, &c_value, &c_imported, &c_fixed, &f_mi, &f_track,
                          &f_ts, &f_value, &f_imported, &interval_us, &max_gap_us,
                          &max_power_gap_us, &tol1, &wrap_frac, &reset_fill, &fl[0], &fl[1],
                          &fl[2], &fl[3], &fl[4], &fl[5], &fl[6]))
        return NULL;
    Py_buffer *all[] = {&method, &rating, &modulus, &resolution, &cut, &hor_e, &hor_p,
                        &c_mi, &c_track, &c_ts, &c_value, &c_imported, &c_fixed,
                        &f_mi, &f_track, &f_ts, &f_value, &f_imported};
    PyObject *result = NULL;
    Job j;
    memset(&j, 0, sizeof j);
    Py_ssize_t nm = method.len, nc = c_ts.len / 8, nf = f_ts.len / 8;
    if (check_len(&rating, 8, nm, "rating") || check_len(&modulus, 8, nm, "modulus") ||
        check_len(&resolution, 8, nm, "resolution") || check_len(&cut, 8, nm, "cut") ||
        check_len(&hor_e, 8, nm, "horizon_energy") || check_len(&hor_p, 8, nm, "horizon_power") ||
        check_len(&c_mi, 4, nc, "carry mi") || check_len(&c_track, 1, nc, "carry track") ||
        check_len(&c_ts, 8, nc, "carry ts") || check_len(&c_value, 8, nc, "carry value") ||
        check_len(&c_imported, 1, nc, "carry imported") ||
        check_len(&c_fixed, 1, nc, "carry fixed") || check_len(&f_mi, 4, nf, "mi") ||
        check_len(&f_track, 1, nf, "track") || check_len(&f_ts, 8, nf, "ts") ||
        check_len(&f_value, 8, nf, "value") || check_len(&f_imported, 1, nf, "imported"))
        goto release;
    if (interval_us <= 0) {
        PyErr_SetString(PyExc_ValueError, "interval_us must be positive");
        goto release;
    }
    j.n_meters = nm;
    j.method = method.buf;
    j.rating = rating.buf;
    j.modulus = modulus.buf;
    j.resolution = resolution.buf;
    j.cut = cut.buf;
    j.hor_e = hor_e.buf;
    j.hor_p = hor_p.buf;
    j.src[0] = (Source){nc, c_mi.buf, c_track.buf, c_ts.buf, c_value.buf, c_imported.buf,
                        c_fixed.buf};
    j.src[1] = (Source){nf, f_mi.buf, f_track.buf, f_ts.buf, f_value.buf, f_imported.buf, NULL};
    j.c = (Config){interval_us, max_gap_us, max_power_gap_us, tol1, wrap_frac, reset_fill,
                   {(uint16_t)fl[0], (uint16_t)fl[1], (uint16_t)fl[2], (uint16_t)fl[3],
                    (uint16_t)fl[4], (uint16_t)fl[5], (uint16_t)fl[6]}};
    Vec *vecs[] = {&j.out.mi,       &j.out.k,         &j.out.energy,    &j.out.covered,
                   &j.out.flags,    &j.out.rejected,  &j.carry_e.mi,    &j.carry_e.track,
                   &j.carry_e.ts,   &j.carry_e.value, &j.carry_e.imported, &j.carry_e.fixed,
                   &j.carry_p.mi,   &j.carry_p.track, &j.carry_p.ts,    &j.carry_p.value,
                   &j.carry_p.imported, &j.carry_p.fixed};
    size_t sizes[] = {4, 8, 8, 8, 2, 4, 4, 1, 8, 8, 1, 1, 4, 1, 8, 8, 1, 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) vecs[i]->size = sizes[i];
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = run(&j);
    Py_END_ALLOW_THREADS
    if (rc) {
        PyErr_SetString(strcmp(j.error, "out of memory") == 0 ? PyExc_MemoryError
                                                               : PyExc_ValueError,
                        j.error);
    } else {
        result = Py_BuildValue(
            "(NNNNNNNNNNNNL)", vec_bytes(&j.out.mi, NULL), vec_bytes(&j.out.k, NULL),
            vec_bytes(&j.out.energy, NULL), vec_bytes(&j.out.covered, NULL),
            vec_bytes(&j.out.flags, NULL), vec_bytes(&j.out.rejected, NULL),
            vec_bytes(&j.carry_e.mi, &j.carry_p.mi), vec_bytes(&j.carry_e.track, &j.carry_p.track),
            vec_bytes(&j.carry_e.ts, &j.carry_p.ts), vec_bytes(&j.carry_e.value, &j.carry_p.value),
            vec_bytes(&j.carry_e.imported, &j.carry_p.imported),
            vec_bytes(&j.carry_e.fixed, &j.carry_p.fixed), (long long)j.late);
    }
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) vec_free(vecs[i]);
release:
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) PyBuffer_Release(all[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"feed", kernel_feed, METH_VARARGS,
     "feed(method, rating, modulus, resolution, cut, horizon_energy, horizon_power, carry_mi,"
     " carry_track, carry_ts, carry_value, carry_imported, carry_fixed, mi, track, ts, value,"
     " imported, interval_us, max_gap_us, max_power_gap_us, tol1, wrap_frac, reset_fill, flags)"
     " -> (intervals..., carry..., late)\n\n"
     "One incremental step of interval energy; see agent/energy/kernel.py."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernel",
                                    "Interval-energy kernel (see kernel.py).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&module); }

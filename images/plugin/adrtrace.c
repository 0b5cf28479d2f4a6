/*
 * adrtrace: a QEMU TCG plugin that keeps, per 64-byte line of one guest-physical range (the
 * NVDIMM), the stores that have not reached the persistence domain of an ADR platform.
 *
 * Build (lab/vm/plugin.py does it, content-addressed):
 *   gcc -shared -fPIC -O2 -Wall -Wextra -Werror -I DIR_WITH_qemu-plugin.h \
 *       $(pkg-config --cflags glib-2.0) -o adrtrace.so adrtrace.c
 * The header is include/qemu/qemu-plugin.h of the exact QEMU source version (API version 4,
 * QEMU 10.0); only the supported plugin API is used.
 *
 * Load: -plugin PATH,ctl=FD   FD: an inherited socket; the host writes one command a line and
 * reads one reply a line:
 *   ping                -> pong
 *   arm BASE SIZE       -> armed          (hex or decimal; replies once a vCPU has re-translated
 *                                          its code with instrumentation: poke the guest meanwhile)
 *   dump PATH           -> dumped LINES STORES | error TEXT   (the vCPUs must be stopped)
 *   disarm              -> disarmed
 * Disarmed, nothing is instrumented (a translation hook that only looks at a flag): boots and
 * restores run at full speed. Arming and disarming go through qemu_plugin_reset from a vCPU,
 * which flushes the translated code.
 *
 * Model (ADR): a store to the range is pending on its line. clwb/clflushopt mark the line's
 * pending stores flushed by that vCPU; its next fence (sfence, mfence, a locked instruction,
 * xchg with memory) persists them. clflush persists the line at once (it is ordered with stores).
 * A non-temporal store (movnti, movnt*, vmovnt*, maskmovdqu, movdir64b) writes its line back and
 * is itself flushed, persisted at the fence. wbinvd persists everything. A flushed address is a
 * virtual address (its registers decoded from the instruction bytes); it is translated with the
 * virtual->physical pages learnt from the range's own stores (no API translates addresses).
 *
 * Dump (text): "pmemlab-adrtrace 1", "range BASE SIZE", "counts k=v ...", then per line with
 * pending stores "line ADDR MASK SHADOW" (SHADOW: the bytes persisted stores wrote since arming,
 * MASK: which of the 64 bytes they cover) followed by its stores in program order
 * "s SEQ VCPU ADDR SIZE STATE VALUE PC" (STATE u: not flushed, f: flushed, awaiting a fence; PC:
 * the storing instruction's virtual address), and
 * "end LINES STORES". A dump without its end line is truncated.
 */
#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define LINE 64u
#define PAGE_SHIFT 12
#define MAX_VCPUS 64
#define NREGS 16

enum insn_kind { K_NONE, K_CLWB, K_CLFLUSHOPT, K_CLFLUSH, K_FENCE, K_WBINVD };
enum store_state { ST_UNFLUSHED = 'u', ST_FLUSHED = 'f' };

typedef struct {
	uint64_t seq, addr, pc; /* pc: the storing instruction's virtual address (symbolised by the host) */
	uint8_t size, vcpu, state, flusher;
	uint8_t val[16];
} pstore;

typedef struct {
	uint64_t addr, mask;
	uint64_t listed; /* bit v: on vCPU v's list of lines with flushed stores */
	uint8_t shadow[LINE];
	GArray *pending; /* pstore, program order */
} pline;

/* A flush instruction's operand, decoded at translation. */
typedef struct {
	enum insn_kind kind;
	int base, index; /* register numbers 0..15, -1 none */
	int scale;
	int64_t disp;
	int rip_rel, seg; /* seg: 0 none, 4 fs, 5 gs */
	int addr32;
	uint64_t next_rip;
} flush_op;

static qemu_plugin_id_t plugin_id;
static int ctl_fd = -1;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t reply_lock = PTHREAD_MUTEX_INITIALIZER;
/* The state the host asked for, reached by the next vCPU callback through a plugin reset. A
 * reset that finds it reached already (a second vCPU raced the first) only re-registers. */
static volatile int target;
static volatile int armed;
static uint64_t range_base, range_size;
static GHashTable *lines;  /* line address -> pline* */
static GHashTable *vpages; /* virtual page -> physical page */
static GPtrArray *flushed[MAX_VCPUS];
static uint64_t seq;
static uint64_t n_stores, n_flushes, n_unresolved, n_fences, n_nt, n_wbinvd;
static struct qemu_plugin_register *regs[MAX_VCPUS][NREGS + 2]; /* rax..r15, fs_base, gs_base */
static const char *const reg_names[NREGS + 2] = {
	"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "fs_base", "gs_base",
};

static void reply(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void reply(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	pthread_mutex_lock(&reply_lock);
	for (int done = 0; done < n;) {
		ssize_t w = write(ctl_fd, buf + done, (size_t)(n - done));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		done += (int)w;
	}
	pthread_mutex_unlock(&reply_lock);
}

/* -- the line table (callers hold `lock`) ---------------------------------------------- */

static void free_line(gpointer p)
{
	pline *l = p;
	g_array_free(l->pending, TRUE);
	g_free(l);
}

static void reset_tables(void)
{
	if (lines)
		g_hash_table_destroy(lines);
	if (vpages)
		g_hash_table_destroy(vpages);
	lines = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, free_line);
	vpages = g_hash_table_new(g_direct_hash, g_direct_equal);
	for (int v = 0; v < MAX_VCPUS; v++) {
		if (flushed[v])
			g_ptr_array_set_size(flushed[v], 0);
		else
			flushed[v] = g_ptr_array_new();
	}
	seq = n_stores = n_flushes = n_unresolved = n_fences = n_nt = n_wbinvd = 0;
}

static pline *line_at(uint64_t addr, int create)
{
	pline *l = g_hash_table_lookup(lines, GSIZE_TO_POINTER(addr));

	if (!l && create) {
		l = g_new0(pline, 1);
		l->addr = addr;
		l->pending = g_array_new(FALSE, FALSE, sizeof(pstore));
		g_hash_table_insert(lines, GSIZE_TO_POINTER(addr), l);
	}
	return l;
}

static void apply(pline *l, const pstore *s)
{
	unsigned off = (unsigned)(s->addr - l->addr);

	memcpy(l->shadow + off, s->val, s->size);
	for (unsigned i = 0; i < s->size; i++)
		l->mask |= 1ull << (off + i);
}

/* Persist the stores of `l` that vCPU v's fence covers (those it flushed), or all (v < 0). */
static void persist(pline *l, int v)
{
	GArray *kept = g_array_new(FALSE, FALSE, sizeof(pstore));

	for (guint i = 0; i < l->pending->len; i++) {
		pstore *s = &g_array_index(l->pending, pstore, i);
		if (v < 0 || (s->state == ST_FLUSHED && s->flusher == v))
			apply(l, s);
		else
			g_array_append_val(kept, *s);
	}
	g_array_free(l->pending, TRUE);
	l->pending = kept;
}

static void mark_flushed(pline *l, unsigned v)
{
	for (guint i = 0; i < l->pending->len; i++) {
		pstore *s = &g_array_index(l->pending, pstore, i);
		s->state = ST_FLUSHED;
		s->flusher = (uint8_t)v;
	}
	if (!(l->listed & (1ull << v))) {
		l->listed |= 1ull << v;
		g_ptr_array_add(flushed[v], l);
	}
}

static void fence(unsigned v)
{
	GPtrArray *list = flushed[v];

	for (guint i = 0; i < list->len; i++) {
		pline *l = g_ptr_array_index(list, i);
		persist(l, (int)v);
		l->listed &= ~(1ull << v);
	}
	g_ptr_array_set_size(list, 0);
}

static gboolean wbinvd_one(gpointer key, gpointer value, gpointer data)
{
	(void)key; (void)data;
	persist(value, -1);
	return FALSE;
}

/* -- callbacks while armed ------------------------------------------------------------- */

static void store(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, uint64_t pc, int nt)
{
	struct qemu_plugin_hwaddr *hw;
	qemu_plugin_mem_value mv;
	uint8_t bytes[16];
	unsigned size;
	uint64_t pa;

	if (!qemu_plugin_mem_is_store(info) || vcpu >= MAX_VCPUS)
		return;
	hw = qemu_plugin_get_hwaddr(info, vaddr);
	if (!hw || qemu_plugin_hwaddr_is_io(hw))
		return;
	pa = qemu_plugin_hwaddr_phys_addr(hw);
	if (pa < range_base || pa - range_base >= range_size)
		return;
	size = 1u << qemu_plugin_mem_size_shift(info);
	if (size > 16)
		size = 16;
	mv = qemu_plugin_mem_get_value(info);
	switch (mv.type) {
	case QEMU_PLUGIN_MEM_VALUE_U8: bytes[0] = mv.data.u8; break;
	case QEMU_PLUGIN_MEM_VALUE_U16: memcpy(bytes, &mv.data.u16, 2); break;
	case QEMU_PLUGIN_MEM_VALUE_U32: memcpy(bytes, &mv.data.u32, 4); break;
	case QEMU_PLUGIN_MEM_VALUE_U64: memcpy(bytes, &mv.data.u64, 8); break;
	default:
		memcpy(bytes, &mv.data.u128.low, 8);
		memcpy(bytes + 8, &mv.data.u128.high, 8);
	}
	pthread_mutex_lock(&lock);
	if (!armed) {
		pthread_mutex_unlock(&lock);
		return;
	}
	n_stores++;
	n_nt += nt;
	g_hash_table_insert(vpages, GSIZE_TO_POINTER(vaddr >> PAGE_SHIFT), GSIZE_TO_POINTER(pa >> PAGE_SHIFT));
	for (unsigned done = 0; done < size;) { /* split at line boundaries */
		uint64_t a = pa + done, la = a & ~(uint64_t)(LINE - 1);
		unsigned n = (unsigned)MIN(size - done, la + LINE - a);
		pline *l = line_at(la, 1);
		pstore s = { .seq = seq++, .addr = a, .pc = pc, .size = (uint8_t)n, .vcpu = (uint8_t)vcpu,
			     .state = ST_UNFLUSHED };

		memcpy(s.val, bytes + done, n);
		if (nt) /* written back with the line, itself on its way: persisted at the fence */
			mark_flushed(l, vcpu);
		if (nt) {
			s.state = ST_FLUSHED;
			s.flusher = (uint8_t)vcpu;
		}
		g_array_append_val(l->pending, s);
		done += n;
	}
	pthread_mutex_unlock(&lock);
}

/* The mem callbacks' userdata is the instruction's address: no allocation per translation. */
static void on_store(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *udata)
{
	store(vcpu, info, vaddr, (uint64_t)(uintptr_t)udata, 0);
}

static void on_store_nt(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *udata)
{
	store(vcpu, info, vaddr, (uint64_t)(uintptr_t)udata, 1);
}

static uint64_t read_reg(unsigned vcpu, int r)
{
	GByteArray *buf;
	uint64_t value = 0;

	if (r < 0 || !regs[vcpu][r])
		return 0;
	buf = g_byte_array_new();
	if (qemu_plugin_read_register(regs[vcpu][r], buf) > 0)
		memcpy(&value, buf->data, MIN(buf->len, 8u));
	g_byte_array_free(buf, TRUE);
	return value;
}

static void on_flush(unsigned int vcpu, void *udata)
{
	const flush_op *op = udata;
	uint64_t ea, ppage, pa;
	gpointer found;
	pline *l;

	if (vcpu >= MAX_VCPUS)
		return;
	ea = (uint64_t)op->disp;
	if (op->rip_rel)
		ea += op->next_rip;
	if (op->base >= 0)
		ea += read_reg(vcpu, op->base);
	if (op->index >= 0)
		ea += read_reg(vcpu, op->index) << op->scale;
	if (op->addr32)
		ea &= 0xffffffffu;
	if (op->seg)
		ea += read_reg(vcpu, op->seg == 4 ? NREGS : NREGS + 1);
	pthread_mutex_lock(&lock);
	if (!armed)
		goto out;
	n_flushes++;
	if (!g_hash_table_lookup_extended(vpages, GSIZE_TO_POINTER(ea >> PAGE_SHIFT), NULL, &found)) {
		n_unresolved++; /* no store to the range through this page yet: nothing of ours to flush */
		goto out;
	}
	ppage = GPOINTER_TO_SIZE(found);
	pa = ((ppage << PAGE_SHIFT) | (ea & ((1u << PAGE_SHIFT) - 1))) & ~(uint64_t)(LINE - 1);
	l = line_at(pa, 0);
	if (!l || !l->pending->len)
		goto out;
	if (op->kind == K_CLFLUSH)
		persist(l, -1);
	else
		mark_flushed(l, vcpu);
out:
	pthread_mutex_unlock(&lock);
}

static void on_fence(unsigned int vcpu, void *udata)
{
	if (vcpu >= MAX_VCPUS || (udata == NULL && !flushed[vcpu]->len))
		return; /* only this vCPU adds to its list: nothing to persist */
	pthread_mutex_lock(&lock);
	if (armed) {
		n_fences++;
		if (udata != NULL) {
			n_wbinvd++;
			g_hash_table_foreach_remove(lines, wbinvd_one, NULL);
			for (int v = 0; v < MAX_VCPUS; v++) {
				for (guint i = 0; i < flushed[v]->len; i++)
					((pline *)g_ptr_array_index(flushed[v], i))->listed = 0;
				g_ptr_array_set_size(flushed[v], 0);
			}
		} else {
			fence(vcpu);
		}
	}
	pthread_mutex_unlock(&lock);
}

/* -- decoding (64-bit mode) ------------------------------------------------------------- */

typedef struct {
	int lock, p66, addr32, seg, rex;
	size_t op; /* index of the first opcode byte */
} prefixes;

static void parse_prefixes(const uint8_t *b, size_t n, prefixes *p)
{
	size_t i = 0;

	memset(p, 0, sizeof(*p));
	for (; i < n; i++) {
		switch (b[i]) {
		case 0xf0: p->lock = 1; continue;
		case 0x66: p->p66 = 1; continue;
		case 0x67: p->addr32 = 1; continue;
		case 0x64: p->seg = 4; continue;
		case 0x65: p->seg = 5; continue;
		case 0xf2: case 0xf3: case 0x2e: case 0x36: case 0x3e: case 0x26: continue;
		}
		break;
	}
	if (i < n && (b[i] & 0xf0) == 0x40)
		p->rex = b[i++];
	p->op = i;
}

/* The memory operand of ModRM at b[m]: fills op, false if it is a register operand. */
static int decode_modrm(const uint8_t *b, size_t n, size_t m, const prefixes *p, flush_op *op)
{
	unsigned mod, rm;
	size_t i = m + 1;

	if (m >= n)
		return 0;
	mod = b[m] >> 6;
	rm = b[m] & 7;
	if (mod == 3)
		return 0;
	op->base = op->index = -1;
	op->scale = 0;
	op->disp = 0;
	op->rip_rel = 0;
	if (rm == 4) {
		unsigned sib, idx, base;
		if (i >= n)
			return 0;
		sib = b[i++];
		op->scale = (int)(sib >> 6);
		idx = ((sib >> 3) & 7) | ((p->rex & 2) ? 8 : 0);
		base = (sib & 7) | ((p->rex & 1) ? 8 : 0);
		if (idx != 4)
			op->index = (int)idx;
		if ((sib & 7) == 5 && mod == 0) {
			if (i + 4 > n)
				return 0;
			op->disp = (int32_t)(b[i] | b[i + 1] << 8 | b[i + 2] << 16 | (uint32_t)b[i + 3] << 24);
			i += 4;
		} else {
			op->base = (int)base;
		}
	} else if (rm == 5 && mod == 0) {
		op->rip_rel = 1;
	} else {
		op->base = (int)(rm | ((p->rex & 1) ? 8 : 0));
	}
	if (mod == 1) {
		if (i >= n)
			return 0;
		op->disp = (int8_t)b[i];
	} else if (mod == 2 || (mod == 0 && rm == 5)) {
		if (i + 4 > n)
			return 0;
		op->disp = (int32_t)(b[i] | b[i + 1] << 8 | b[i + 2] << 16 | (uint32_t)b[i + 3] << 24);
	}
	op->addr32 = p->addr32;
	op->seg = p->seg;
	return 1;
}

/* What an instruction is to the model; `op` gets a flush's operand, `nt` says non-temporal. */
static enum insn_kind classify(const uint8_t *b, size_t n, flush_op *op, int *nt)
{
	prefixes p;
	size_t o;

	*nt = 0;
	parse_prefixes(b, n, &p);
	o = p.op;
	if (o >= n)
		return K_NONE;
	if (b[o] == 0xc5 || b[o] == 0xc4) { /* VEX: vmovntdq/vmovntps/vmovntpd (map 0F: E7, 2B) */
		size_t len = b[o] == 0xc5 ? 2 : 3;
		unsigned map = b[o] == 0xc5 ? 1 : (b[o + 1] & 0x1f);
		if (o + len < n && map == 1 && (b[o + len] == 0xe7 || b[o + len] == 0x2b))
			*nt = 1;
		return K_NONE;
	}
	if (p.lock)
		return K_FENCE;
	if ((b[o] == 0x86 || b[o] == 0x87) && o + 1 < n && (b[o + 1] >> 6) != 3)
		return K_FENCE; /* xchg with memory is locked */
	if (b[o] != 0x0f || o + 1 >= n)
		return K_NONE;
	switch (b[o + 1]) {
	case 0xae: {
		unsigned modrm, reg;
		if (o + 2 >= n)
			return K_NONE;
		modrm = b[o + 2];
		reg = (modrm >> 3) & 7;
		if ((modrm >> 6) == 3)
			return (reg == 6 || reg == 7) && !p.p66 ? K_FENCE : K_NONE; /* mfence, sfence */
		if (reg != 6 && reg != 7)
			return K_NONE;
		if (!decode_modrm(b, n, o + 2, &p, op))
			return K_NONE;
		if (reg == 7)
			return p.p66 ? K_CLFLUSHOPT : K_CLFLUSH;
		return p.p66 ? K_CLWB : K_NONE; /* without 66: xsaveopt */
	}
	case 0x09:
		return K_WBINVD;
	case 0xc3: /* movnti */
	case 0x2b: /* movntps/pd */
	case 0xe7: /* movntq/movntdq */
	case 0xf7: /* maskmovq/maskmovdqu */
		*nt = 1;
		return K_NONE;
	case 0x38:
		if (o + 2 < n && b[o + 2] == 0xf8 && p.p66) /* movdir64b */
			*nt = 1;
		return K_NONE;
	case 0xc7: /* cmpxchg8b/16b: only with lock (handled above) */
	default:
		return K_NONE;
	}
}

static char wbinvd_marker;

static void tb_armed(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
static void tb_disarmed(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
static void vcpu_poke(qemu_plugin_id_t id, unsigned int vcpu);

/* Runs with every vCPU stopped, after the translated code was flushed and every callback
 * unregistered: register the callbacks of the target state. */
static void after_reset(qemu_plugin_id_t id)
{
	int t = target, changed;

	pthread_mutex_lock(&lock);
	changed = t != armed;
	if (changed) {
		armed = t;
		if (armed)
			reset_tables();
	}
	pthread_mutex_unlock(&lock);
	qemu_plugin_register_vcpu_tb_trans_cb(id, t ? tb_armed : tb_disarmed);
	qemu_plugin_register_vcpu_idle_cb(id, vcpu_poke);
	qemu_plugin_register_vcpu_resume_cb(id, vcpu_poke);
	if (changed)
		reply(t ? "armed" : "disarmed");
}

/* From a vCPU (qemu_plugin_reset flushes translated code only when called from one); QEMU drops a
 * request while a reset is pending. */
static void request_reset(void)
{
	if (target != armed)
		qemu_plugin_reset(plugin_id, after_reset);
}

static void vcpu_poke(qemu_plugin_id_t id, unsigned int vcpu)
{
	(void)id; (void)vcpu;
	request_reset();
}

static void tb_disarmed(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	(void)id; (void)tb;
	request_reset();
}

static void tb_armed(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	size_t n = qemu_plugin_tb_n_insns(tb);

	(void)id;
	request_reset();
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		uint8_t bytes[16];
		size_t len = qemu_plugin_insn_data(insn, bytes, sizeof(bytes));
		flush_op op;
		int nt;
		enum insn_kind kind = classify(bytes, len, &op, &nt);

		qemu_plugin_register_vcpu_mem_cb(insn, nt ? on_store_nt : on_store, QEMU_PLUGIN_CB_NO_REGS,
						 QEMU_PLUGIN_MEM_W, (void *)(uintptr_t)qemu_plugin_insn_vaddr(insn));
		switch (kind) {
		case K_CLWB: case K_CLFLUSHOPT: case K_CLFLUSH: {
			flush_op *keep = g_new(flush_op, 1); /* lives as long as the translation: never freed */
			*keep = op;
			keep->kind = kind;
			keep->next_rip = qemu_plugin_insn_vaddr(insn) + qemu_plugin_insn_size(insn);
			qemu_plugin_register_vcpu_insn_exec_cb(insn, on_flush, QEMU_PLUGIN_CB_R_REGS, keep);
			break;
		}
		case K_FENCE:
			qemu_plugin_register_vcpu_insn_exec_cb(insn, on_fence, QEMU_PLUGIN_CB_NO_REGS, NULL);
			break;
		case K_WBINVD:
			qemu_plugin_register_vcpu_insn_exec_cb(insn, on_fence, QEMU_PLUGIN_CB_NO_REGS, &wbinvd_marker);
			break;
		default:
			break;
		}
	}
}

/* -- dump and control ------------------------------------------------------------------ */

static int dump(const char *path, uint64_t *n_lines, uint64_t *n_st)
{
	GHashTableIter it;
	gpointer key, value;
	FILE *f = fopen(path, "w");

	if (!f)
		return -1;
	*n_lines = *n_st = 0;
	fprintf(f, "pmemlab-adrtrace 1\nrange 0x%" PRIx64 " 0x%" PRIx64 "\n", range_base, range_size);
	fprintf(f, "counts stores=%" PRIu64 " flushes=%" PRIu64 " unresolved_flushes=%" PRIu64
		" fences=%" PRIu64 " nt_stores=%" PRIu64 " wbinvd=%" PRIu64 "\n",
		n_stores, n_flushes, n_unresolved, n_fences, n_nt, n_wbinvd);
	g_hash_table_iter_init(&it, lines);
	while (g_hash_table_iter_next(&it, &key, &value)) {
		pline *l = value;
		if (!l->pending->len)
			continue;
		(*n_lines)++;
		fprintf(f, "line 0x%" PRIx64 " %016" PRIx64 " ", l->addr, l->mask);
		for (unsigned i = 0; i < LINE; i++)
			fprintf(f, "%02x", l->shadow[i]);
		fputc('\n', f);
		for (guint i = 0; i < l->pending->len; i++) {
			pstore *s = &g_array_index(l->pending, pstore, i);
			(*n_st)++;
			fprintf(f, "s %" PRIu64 " %u 0x%" PRIx64 " %u %c ", s->seq, s->vcpu, s->addr, s->size, s->state);
			for (unsigned j = 0; j < s->size; j++)
				fprintf(f, "%02x", s->val[j]);
			fprintf(f, " 0x%" PRIx64 "\n", s->pc);
		}
	}
	fprintf(f, "end %" PRIu64 " %" PRIu64 "\n", *n_lines, *n_st);
	if (fclose(f) != 0)
		return -1;
	return 0;
}

static void command(char *cmd)
{
	char path[4096];
	unsigned long long base, size;

	if (!strcmp(cmd, "ping")) {
		reply("pong");
	} else if (sscanf(cmd, "arm %lli %lli", &base, &size) == 2 && size > 0) {
		int already;
		pthread_mutex_lock(&lock);
		range_base = base;
		range_size = size;
		already = armed && target;
		if (already) /* re-arming: a fresh start on the new range, no retranslation needed */
			reset_tables();
		pthread_mutex_unlock(&lock);
		if (already)
			reply("armed");
		else
			target = 1;
	} else if (!strcmp(cmd, "disarm")) {
		if (!armed && !target)
			reply("disarmed");
		else
			target = 0;
	} else if (sscanf(cmd, "dump %4095s", path) == 1) {
		uint64_t nl = 0, ns = 0;
		int rc;
		pthread_mutex_lock(&lock);
		rc = armed ? dump(path, &nl, &ns) : (errno = EINVAL, -1);
		pthread_mutex_unlock(&lock);
		if (rc < 0)
			reply("error %s: %s", armed ? path : "not armed", strerror(errno));
		else
			reply("dumped %" PRIu64 " %" PRIu64, nl, ns);
	} else {
		reply("error unknown command: %.100s", cmd);
	}
}

static void *control(void *arg)
{
	char buf[8192];
	size_t have = 0;

	(void)arg;
	for (;;) {
		ssize_t r = read(ctl_fd, buf + have, sizeof(buf) - 1 - have);
		char *nl;
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return NULL; /* the host closed its end */
		have += (size_t)r;
		buf[have] = 0;
		while ((nl = memchr(buf, '\n', have))) {
			*nl = 0;
			command(buf);
			have -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, have);
		}
		if (have == sizeof(buf) - 1)
			have = 0; /* a line too long: dropped */
	}
}

static void vcpu_init(qemu_plugin_id_t id, unsigned int vcpu)
{
	GArray *descs;

	(void)id;
	if (vcpu >= MAX_VCPUS)
		return;
	descs = qemu_plugin_get_registers();
	for (guint i = 0; i < descs->len; i++) {
		qemu_plugin_reg_descriptor *d = &g_array_index(descs, qemu_plugin_reg_descriptor, i);
		for (int r = 0; r < NREGS + 2; r++)
			if (!strcmp(d->name, reg_names[r]))
				regs[vcpu][r] = d->handle;
	}
	g_array_free(descs, TRUE);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
					   char **argv)
{
	pthread_t thread;

	if (strcmp(info->target_name, "x86_64") != 0) {
		fprintf(stderr, "adrtrace: target %s is not x86_64\n", info->target_name);
		return -1;
	}
	if (info->system.max_vcpus > MAX_VCPUS) {
		fprintf(stderr, "adrtrace: at most %d vCPUs\n", MAX_VCPUS);
		return -1;
	}
	for (int i = 0; i < argc; i++)
		if (!strncmp(argv[i], "ctl=", 4))
			ctl_fd = atoi(argv[i] + 4);
	if (ctl_fd < 0) {
		fprintf(stderr, "adrtrace: needs ctl=FD (an inherited socket)\n");
		return -1;
	}
	plugin_id = id;
	reset_tables();
	qemu_plugin_register_vcpu_init_cb(id, vcpu_init);
	qemu_plugin_register_vcpu_tb_trans_cb(id, tb_disarmed);
	qemu_plugin_register_vcpu_idle_cb(id, vcpu_poke);
	qemu_plugin_register_vcpu_resume_cb(id, vcpu_poke);
	if (pthread_create(&thread, NULL, control, NULL) != 0) {
		fprintf(stderr, "adrtrace: cannot start the control thread\n");
		return -1;
	}
	pthread_detach(thread);
	return 0;
}

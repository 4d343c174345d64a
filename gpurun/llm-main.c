/* phi-llm: prompt in, text out (stdout); load/prefill/decode timings on stderr.
 * Test modes: --tokenize prints token ids; --detok IDS prints their text; --logits FILE
 * with --tokens IDS writes the logits after each token (decoded one at a time) and, last,
 * after a batched prefill of all of them, as raw float32. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "util.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int print_piece(void *ud, int32_t tok, const char *p, size_t n)
{
	(void)ud;
	(void)tok;
	fwrite(p, 1, n, stdout);
	fflush(stdout);
	return 0;
}

static int parse_ids(const char *s, int32_t *out, size_t max, size_t *ret_n)
{
	size_t n = 0;
	while (*s) {
		char *end;
		long v = strtol(s, &end, 10);
		if (end == s || v < 0 || v > INT32_MAX || n >= max)
			return -EINVAL;
		out[n++] = (int32_t)v;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			return -EINVAL;
	}
	*ret_n = n;
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: phi-llm -m MODEL.gguf [-p PROMPT | -f FILE] [-n MAX_TOKENS] [-t THREADS] [-c CTX]\n"
		"               [--temp T] [--top-k K] [--top-p P] [--seed S] [--chat] [--system TEXT]\n"
		"               [--no-gpu] [--tokenize] [--detok IDS] [--tokens IDS --logits FILE]\n"
		"               [--bench-pp N] [--bench-tg N]\n");
}

int main(int argc, char **argv)
{
	enum { O_TEMP = 256, O_TOPK, O_TOPP, O_SEED, O_CHAT, O_SYSTEM, O_NOGPU, O_TOKENIZE, O_DETOK,
	       O_TOKENS, O_LOGITS, O_PP, O_TG };
	static const struct option lo[] = {
		{ "temp", 1, 0, O_TEMP }, { "top-k", 1, 0, O_TOPK }, { "top-p", 1, 0, O_TOPP },
		{ "seed", 1, 0, O_SEED }, { "chat", 0, 0, O_CHAT }, { "system", 1, 0, O_SYSTEM },
		{ "no-gpu", 0, 0, O_NOGPU }, { "tokenize", 0, 0, O_TOKENIZE }, { "detok", 1, 0, O_DETOK },
		{ "tokens", 1, 0, O_TOKENS }, { "logits", 1, 0, O_LOGITS }, { "bench-pp", 1, 0, O_PP },
		{ "bench-tg", 1, 0, O_TG }, { 0, 0, 0, 0 }
	};
	const char *model = NULL, *prompt = NULL, *file = NULL, *system = NULL, *detok = NULL,
		   *tokens = NULL, *logits = NULL;
	struct phi_engine_opts eo = { .n_threads = 1 };
	struct phi_sample_opts so = { .temperature = 0, .top_k = 40, .top_p = 0.95f, .seed = 1 };
	long max_tokens = 128, pp = 0, tg = 0;
	bool chat = false, tokenize = false;
	int c;
	while ((c = getopt_long(argc, argv, "m:p:f:n:t:c:h", lo, NULL)) != -1) {
		switch (c) {
		case 'm': model = optarg; break;
		case 'p': prompt = optarg; break;
		case 'f': file = optarg; break;
		case 'n': max_tokens = atol(optarg); break;
		case 't': eo.n_threads = atoi(optarg); break;
		case 'c': eo.n_ctx = (uint32_t)atol(optarg); break;
		case O_TEMP: so.temperature = strtof(optarg, NULL); break;
		case O_TOPK: so.top_k = (uint32_t)atol(optarg); break;
		case O_TOPP: so.top_p = strtof(optarg, NULL); break;
		case O_SEED: so.seed = strtoull(optarg, NULL, 10); break;
		case O_CHAT: chat = true; break;
		case O_SYSTEM: system = optarg; break;
		case O_NOGPU: eo.no_gpu = true; break;
		case O_TOKENIZE: tokenize = true; break;
		case O_DETOK: detok = optarg; break;
		case O_TOKENS: tokens = optarg; break;
		case O_LOGITS: logits = optarg; break;
		case O_PP: pp = atol(optarg); break;
		case O_TG: tg = atol(optarg); break;
		default: usage(); return 2;
		}
	}
	if (!model || max_tokens < 0 || pp < 0 || tg < 0) {
		usage();
		return 2;
	}
	_cleanup_free_ char *text = NULL;
	if (file) {
		_cleanup_fclose_ FILE *f = fopen(file, "re");
		struct phi_buf b;
		phi_buf_init(&b, 1 << 24);
		char chunk[4096];
		size_t n;
		if (!f) {
			perror(file);
			return 1;
		}
		while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
			if (phi_buf_append(&b, chunk, n) < 0) {
				fprintf(stderr, "phi-llm: prompt file too large\n");
				phi_buf_done(&b);
				return 1;
			}
		if (phi_buf_append(&b, "", 1) < 0) {
			phi_buf_done(&b);
			return 1;
		}
		text = (char *)b.p;
		prompt = text;
	}

	double t0 = now();
	struct phi_engine *e;
	const char *err = "";
	int r = phi_engine_load(model, &eo, &e, &err);
	if (r < 0) {
		fprintf(stderr, "phi-llm: %s: %s (%s)\n", model, err, strerror(-r));
		return 1;
	}
	double t1 = now();
	fprintf(stderr, "phi-llm: loaded in %.1f ms, backend %s (%s), context %u, %d thread(s)\n",
		(t1 - t0) * 1e3, phi_engine_backend(e) == PHI_BACKEND_CUDA ? "cuda" : "cpu",
		phi_engine_backend_note(e), phi_engine_n_ctx(e), eo.n_threads);
	/* a token takes at least one byte of text, plus BOS and the SPM space prefix */
	size_t cap = phi_engine_n_ctx(e) + 16 + (prompt ? strlen(prompt) + 8 : 0), n = 0;
	_cleanup_free_ int32_t *ids = calloc(cap, sizeof(int32_t));
	if (!ids) {
		phi_engine_free(e);
		return 1;
	}
	int rc = 0;
	if (detok) {
		char buf[4096];
		if (parse_ids(detok, ids, cap, &n) < 0) {
			fprintf(stderr, "phi-llm: bad --detok list\n");
			rc = 2;
		}
		for (size_t i = 0; i < n && !rc; i++) {
			size_t pl;
			if (phi_engine_piece(e, ids[i], i ? ids[i - 1] : -1, buf, sizeof buf, &pl) < 0) {
				fprintf(stderr, "phi-llm: bad token id\n");
				rc = 1;
				break;
			}
			fwrite(buf, 1, pl, stdout);
		}
	} else if (tokens && logits) {
		if (parse_ids(tokens, ids, cap, &n) < 0 || n == 0) {
			fprintf(stderr, "phi-llm: bad --tokens list\n");
			rc = 2;
		}
		_cleanup_fclose_ FILE *f = rc ? NULL : fopen(logits, "we");
		uint32_t nv = phi_engine_n_vocab(e);
		for (size_t i = 0; i < n && !rc; i++) {
			r = phi_engine_prefill(e, &ids[i], 1);
			if (r < 0 || !f || fwrite(phi_engine_logits(e), 4, nv, f) != nv)
				rc = 1;
		}
		phi_engine_reset(e);
		if (!rc && (phi_engine_prefill(e, ids, n) < 0 || fwrite(phi_engine_logits(e), 4, nv, f) != nv))
			rc = 1;
		if (rc == 1)
			fprintf(stderr, "phi-llm: forward or write failed\n");
	} else if (pp || tg) {
		/* llama-bench style: pp = one batched prefill of N tokens, tg = N decode steps */
		uint32_t nv = phi_engine_n_vocab(e);
		if ((size_t)pp + 1 > cap || (size_t)tg + 1 > cap) {
			fprintf(stderr, "phi-llm: context too small for the benchmark\n");
			rc = 1;
		}
		for (long i = 0; i < pp && !rc; i++)
			ids[i] = (int32_t)((i * 7919 + 13) % nv);
		if (pp && !rc) {
			double a = now();
			rc = phi_engine_prefill(e, ids, (size_t)pp) < 0;
			double b = now();
			printf("pp%ld %.1f tokens/s\n", pp, (double)pp / (b - a));
			phi_engine_reset(e);
		}
		if (tg && !rc) {
			int32_t tok = 1;
			double a = now();
			for (long i = 0; i < tg && !rc; i++) {
				rc = phi_engine_prefill(e, &tok, 1) < 0;
				tok = (int32_t)((i * 7919 + 17) % nv);
			}
			double b = now();
			printf("tg%ld %.1f tokens/s\n", tg, (double)tg / (b - a));
		}
	} else if (prompt) {
		_cleanup_free_ char *chatp = NULL;
		const char *in = prompt;
		if (chat) {
			if (phi_engine_chat_prompt(system, prompt, &chatp) < 0) {
				phi_engine_free(e);
				return 1;
			}
			in = chatp;
		}
		r = phi_engine_tokenize(e, in, strlen(in), !chat, chat || tokenize, ids, cap, &n);
		if (r < 0) {
			fprintf(stderr, "phi-llm: tokenize failed (%s)\n", strerror(-r));
			rc = 1;
		} else if (tokenize) {
			for (size_t i = 0; i < n; i++)
				printf("%s%d", i ? " " : "", ids[i]);
			printf("\n");
		} else if (n == 0) {
			fprintf(stderr, "phi-llm: empty prompt\n");
			rc = 1;
		} else {
			double a = now();
			r = phi_engine_prefill(e, ids, n);
			double b = now();
			size_t gen = 0;
			if (r == 0)
				r = phi_engine_generate(e, &so, (size_t)max_tokens, print_piece, NULL, &gen);
			double d = now();
			printf("\n");
			if (r < 0) {
				fprintf(stderr, "phi-llm: %s\n", strerror(-r));
				rc = 1;
			}
			fprintf(stderr, "phi-llm: prefill %zu tokens in %.2f ms (%.1f tokens/s), "
				"generated %zu tokens in %.2f ms (%.1f tokens/s)\n",
				n, (b - a) * 1e3, (double)n / (b - a), gen, (d - b) * 1e3,
				gen ? (double)gen / (d - b) : 0.0);
		}
		if (chatp)
			explicit_bzero(chatp, strlen(chatp));
	} else {
		usage();
		rc = 2;
	}
	explicit_bzero(ids, cap * sizeof(int32_t));
	if (text)
		explicit_bzero(text, strlen(text));
	phi_engine_free(e);
	return rc;
}

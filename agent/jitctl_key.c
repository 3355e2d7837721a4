#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "agent/jitctl.h"
#include "common/err.h"
#include "common/grant.h"
#include "common/jws.h"
#include "common/keys.h"
#include "common/port.h"
#include "common/prefix.h"
#include "common/revoke.h"

#define JTI_BYTES 16 /* 128 bits: a random jti never collides with an active one in practice */

static void keygen_usage(FILE *f)
{
	fprintf(f, "usage: jitctl keygen --kid KID --dir DIR [--json]\n"
		   "  Writes DIR/KID.key (private, mode 0600) and DIR/KID.pem (public).\n\n"
		   "  --json  print {\"kid\",\"private_key\",\"public_key\"} (the two paths), or\n"
		   "          {\"error\",\"message\"}, as JSON\n");
}

/* keys_generate does not say which file was in the way; the private one is named if it was. */
static int report_exists(bool json, const char *dir, const char *kid)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s.key", dir, kid);
	if (lstat(path, &st))
		snprintf(path, sizeof(path), "%s/%s.pem", dir, kid);
	return jitctl_refuse("keygen", json, JIT_ERR_DUPLICATE, "refusing to overwrite existing %s",
		path);
}

/* JITCTL_OK, or JITCTL_REFUSED: out of memory for the JSON, the keys written all the same. */
static int print_keys(bool json, const char *dir, const char *kid)
{
	char key[PATH_MAX], pem[PATH_MAX];
	json_t *o;

	snprintf(key, sizeof(key), "%s/%s.key", dir, kid);
	snprintf(pem, sizeof(pem), "%s/%s.pem", dir, kid);
	if (!json) {
		printf("private key: %s\n", key);
		printf("public key:  %s (copy it into the agent's keys_dir to trust it)\n", pem);
		return JITCTL_OK;
	}
	/* --dir was checked as text: only memory can fail it, and the keys are there. */
	if (!(o = json_pack("{s:s, s:s, s:s}", "kid", kid, "private_key", key, "public_key",
		pem))) {
		fprintf(stderr, "jitctl keygen: out of memory for the JSON; the key pair is "
			"written: %s, %s\n", key, pem);
		return JITCTL_REFUSED;
	}
	json_dumpf(o, stdout, JSON_INDENT(2));
	printf("\n");
	json_decref(o);
	return JITCTL_OK;
}

int cmd_keygen(const struct jitctl_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "kid", required_argument, NULL, 'k' },
		{ "dir", required_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *kid = NULL, *dir = NULL;
	bool json = false;
	int at, c, ret;

	optind = 0;
	for (at = 1; (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1; at = optind) {
		switch (c) {
		case 'k':
			kid = optarg;
			break;
		case 'd':
			dir = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			keygen_usage(stdout);
			return JITCTL_OK;
		default:
			return jitctl_bad_option("keygen", c, argv, at);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "jitctl keygen: unexpected argument '%s'\n", argv[optind]);
		goto usage;
	}
	if (!kid || !dir) {
		fprintf(stderr, "jitctl keygen: missing --%s\n", !kid ? "kid" : "dir");
		goto usage;
	}
	/* The kid becomes a file name here and on every agent: only what keys_load_public takes. */
	if (!keys_kid_valid(kid)) {
		fprintf(stderr, "jitctl keygen: --kid '%s' is not a key id (1-%d of A-Z a-z 0-9 "
				". _ -, not starting with '.')\n", kid, KEYS_KID_MAX);
		goto usage;
	}
	if (!*dir) {
		fprintf(stderr, "jitctl keygen: --dir is empty\n");
		goto usage;
	}
	/* JSON holds only UTF-8: found out before the keys are written, not after. */
	if (json && (ret = jitctl_text_check(dir)) == -ENOMEM)
		return jitctl_out_of_memory("keygen");
	if (json && ret) {
		fprintf(stderr, "jitctl keygen: --dir is not UTF-8, which --json cannot print\n");
		goto usage;
	}
	ret = keys_generate(dir, kid);
	if (ret == -EEXIST)
		return report_exists(json, dir, kid);
	if (ret) {
		return jitctl_refuse("keygen", json, ret == -EACCES || ret == -EPERM ?
			JIT_ERR_PERMISSION : JIT_ERR_INTERNAL, "writing key pair '%s' in %s: %s",
			kid, dir, strerror(-ret));
	}
	return print_keys(json, dir, kid);
usage:
	jitctl_try_help("keygen");
	return JITCTL_USAGE;
}

static void sign_usage(FILE *f)
{
	fprintf(f, "usage: jitctl sign --key KEY --kid KID --aud HOST[,HOST...] --sub USER\n"
		   "                  --src PREFIX[,...] --port PORT[/PROTO][,...] --for DURATION\n"
		   "                  [--dst PREFIX[,...]] [--iss ISS] [--jti ID] [--reason TEXT]\n"
		   "                  [--not-before DURATION]\n"
		   "       jitctl sign --key KEY --kid KID --aud HOST[,HOST...] --revokes GRANT_ID\n"
		   "                  [--terminate] --for DURATION\n"
		   "                  [--iss ISS] [--jti ID] [--not-before DURATION]\n"
		   "  Prints a grant, or with --revokes a revocation of one (compact JWS, EdDSA),\n"
		   "  signed with an Ed25519 private key.\n\n"
		   "  --key PATH              private key (PEM PKCS#8, as written by jitctl keygen)\n"
		   "  --kid KID               key id; the agent verifies with keys_dir/KID.pem\n"
		   "  --aud HOST[,...]        host ids (the agents' host_id) the token is for\n"
		   "  --sub USER              who the access is for\n"
		   "  --src PREFIX[,...]      source addresses or prefixes (192.0.2.7, 2001:db8::/64)\n"
		   "  --port PORT[/PROTO][,...]  ports; PROTO tcp (default), udp or * (both)\n"
		   "  --dst PREFIX[,...]      machines behind a gateway the grant opens (gateway\n"
		   "                          mode); without it the grant is for the host itself\n"
		   "  --revokes GRANT_ID      sign a revocation (typ " REVOKE_TYP ") of the grant\n"
		   "                          with this jti instead; --sub, --src, --port, --dst\n"
		   "                          and --reason are then refused\n"
		   "  --terminate             with --revokes: also cut the grant's open sessions\n"
		   "  --for DURATION          how long the token is valid from now (at least 1 s);\n"
		   "                          for a revocation, how long agents accept it\n"
		   "  --iss ISS               issuer (default jitctl)\n"
		   "  --jti ID                token id (default 32 random hex digits)\n"
		   "  --reason TEXT           why, for the agent's audit log\n"
		   "  --not-before DURATION   valid only from now + DURATION (less than --for)\n"
		   "  -h, --help              show this help\n\n"
		   "Durations are ISO 8601 (PT10M, PT3H, P1D) or seconds. Ports default to tcp.\n"
		   "If an option is repeated the last one wins. Nothing but syntax and that the\n"
		   "window opens before it closes is checked here: the agent decides whether it\n"
		   "accepts the token.\n");
}

/* Indexes into sign's option table; the required ones (for a grant) come first. */
enum {
	S_KEY,
	S_KID,
	S_AUD,
	S_SUB,
	S_SRC,
	S_PORT,
	S_FOR,
	S_ISS,
	S_JTI,
	S_REASON,
	S_NBF,
	S_REVOKES,
	S_DST,
	S__COUNT,
	S__REQUIRED = S_ISS,
};

#define S_VAL 256 /* getopt_long's val for S_x: above every char, so never confused with one */
#define S_TERMINATE (S_VAL + S__COUNT) /* a flag, so it has no slot in arg[] */

/* What a revocation does not carry: refused with --revokes rather than silently dropped. */
static bool grant_only(int i)
{
	return i == S_SUB || i == S_SRC || i == S_PORT || i == S_REASON || i == S_DST;
}

/* The canonical text, so that the token says exactly what the agent will enforce. */
static int add_src(const char *item, json_t *arr)
{
	char buf[PREFIX_STRLEN];
	struct prefix p;

	if (prefix_parse(item, &p) || prefix_format(&p, buf, sizeof(buf)))
		return -EINVAL;
	return jitctl_list_add(buf, arr);
}

static int add_port(const char *item, json_t *arr)
{
	uint16_t port;
	unsigned mask;

	if (port_spec_parse(item, &port, &mask))
		return -EINVAL;
	return json_array_append_new(arr, json_pack("{s:i, s:s}", "port", (int)port, "protocol",
		port_proto_name(mask))) ? -ENOMEM : 0;
}

/* 32 lowercase hex digits from the CSPRNG into buf. 0 or -EIO. */
static int random_jti(char buf[static 2 * JTI_BYTES + 1])
{
	unsigned char r[JTI_BYTES];

	if (RAND_bytes(r, sizeof(r)) != 1)
		return -EIO;
	for (size_t i = 0; i < sizeof(r); i++)
		snprintf(buf + 2 * i, 3, "%02x", r[i]);
	return 0;
}

/* Sets name to v, which it steals (json_object_set_new releases v on failure as well). */
static int set(json_t *obj, const char *name, json_t *v)
{
	return json_object_set_new(obj, name, v) ? -ENOMEM : 0;
}

int cmd_sign(const struct jitctl_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		[S_KEY] = { "key", required_argument, NULL, S_VAL + S_KEY },
		[S_KID] = { "kid", required_argument, NULL, S_VAL + S_KID },
		[S_AUD] = { "aud", required_argument, NULL, S_VAL + S_AUD },
		[S_SUB] = { "sub", required_argument, NULL, S_VAL + S_SUB },
		[S_SRC] = { "src", required_argument, NULL, S_VAL + S_SRC },
		[S_PORT] = { "port", required_argument, NULL, S_VAL + S_PORT },
		[S_FOR] = { "for", required_argument, NULL, S_VAL + S_FOR },
		[S_ISS] = { "iss", required_argument, NULL, S_VAL + S_ISS },
		[S_JTI] = { "jti", required_argument, NULL, S_VAL + S_JTI },
		[S_REASON] = { "reason", required_argument, NULL, S_VAL + S_REASON },
		[S_NBF] = { "not-before", required_argument, NULL, S_VAL + S_NBF },
		[S_REVOKES] = { "revokes", required_argument, NULL, S_VAL + S_REVOKES },
		[S_DST] = { "dst", required_argument, NULL, S_VAL + S_DST },
		{ "terminate", no_argument, NULL, S_TERMINATE },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *arg[S__COUNT] = { [S_ISS] = "jitctl" };
	char jti[2 * JTI_BYTES + 1], *payload = NULL, *token = NULL;
	json_t *aud = NULL, *src = NULL, *dst = NULL, *ports = NULL, *claims = NULL, *header = NULL, *aud_claim;
	uint64_t valid_for = 0, not_before = 0;
	bool bad = false, revocation, terminate = false;
	EVP_PKEY *key = NULL;
	int at, c, i, err, ret;
	time_t now;

	optind = 0;
	for (at = 1; (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1; at = optind) {
		if (c >= S_VAL && c < S_VAL + S__COUNT) {
			/* Last wins: tests override one claim of a ready-made command line. */
			arg[c - S_VAL] = optarg;
			continue;
		}
		if (c == S_TERMINATE) {
			terminate = true;
			continue;
		}
		if (c == 'h') {
			sign_usage(stdout);
			return JITCTL_OK;
		}
		return jitctl_bad_option("sign", c, argv, at);
	}

	/* Everything the command line alone can get wrong is a usage error, before any I/O. */
	if (optind < argc) {
		fprintf(stderr, "jitctl sign: unexpected argument '%s'\n", argv[optind]);
		goto usage;
	}
	revocation = arg[S_REVOKES] != NULL;
	for (i = 0; i < S__REQUIRED; i++) {
		if (!arg[i] && !(revocation && grant_only(i))) {
			fprintf(stderr, "jitctl sign: missing --%s\n", longopts[i].name);
			bad = true;
		}
	}
	for (i = 0; revocation && i < S__COUNT; i++) {
		if (arg[i] && grant_only(i)) {
			fprintf(stderr, "jitctl sign: --%s is not allowed with --revokes\n",
				longopts[i].name);
			bad = true;
		}
	}
	if (!revocation && terminate) {
		fprintf(stderr, "jitctl sign: --terminate is allowed with --revokes only\n");
		bad = true;
	}
	if (bad)
		goto usage;
	/*
	 * Deliberately no keys_kid_valid: a signer that could only produce well-formed grants
	 * could not test that the agent refuses a kid such as "../keys.d/ctl".
	 */
	if (!*arg[S_KID]) {
		fprintf(stderr, "jitctl sign: --kid is empty\n");
		goto usage;
	}
	for (i = 0; i < S__COUNT; i++) {
		if (i == S_KEY || !arg[i] || !(err = jitctl_text_check(arg[i])))
			continue;
		if (err == -ENOMEM)
			goto nomem;
		fprintf(stderr, "jitctl sign: --%s is not UTF-8 text\n", longopts[i].name);
		goto usage;
	}
	if ((err = jitctl_split_list("sign", "aud", arg[S_AUD], jitctl_list_add, "a host id",
		&aud)) ||
		(!revocation && ((err = jitctl_split_list("sign", "src", arg[S_SRC], add_src,
			JITCTL_PREFIX_WHAT, &src)) ||
		(err = jitctl_split_list("sign", "port", arg[S_PORT], add_port, JITCTL_PORT_WHAT,
			&ports)) ||
		(arg[S_DST] && (err = jitctl_split_list("sign", "dst", arg[S_DST], add_src,
			JITCTL_PREFIX_WHAT, &dst))))))
		goto fail;
	if (jitctl_duration("sign", "for", arg[S_FOR], &valid_for) ||
		(arg[S_NBF] && jitctl_duration("sign", "not-before", arg[S_NBF], &not_before)))
		goto usage;
	if (!valid_for) {
		fprintf(stderr, "jitctl sign: --for '%s' is shorter than 1 s\n", arg[S_FOR]);
		goto usage;
	}
	/* Both count from now: an agent refuses a window that closes before it opens. */
	if (not_before >= valid_for) {
		fprintf(stderr, "jitctl sign: --not-before '%s' is not before the end, --for '%s' "
			"(both count from now)\n", arg[S_NBF], arg[S_FOR]);
		goto usage;
	}

	ret = JITCTL_REFUSED;
	if ((err = keys_load_private(arg[S_KEY], &key))) {
		fprintf(stderr, "jitctl sign: --key %s: %s\n", arg[S_KEY],
			err == -EINVAL ? "not an Ed25519 private key" : strerror(-err));
		/* A file named on the command line that cannot be read is a usage error. */
		if (err != -EINVAL && err != -ENOMEM)
			ret = JITCTL_USAGE;
		goto out;
	}
	if (!arg[S_JTI]) {
		if (random_jti(jti)) {
			fprintf(stderr, "jitctl sign: no random bytes for a jti\n");
			goto out;
		}
		arg[S_JTI] = jti;
	}
	if ((now = time(NULL)) == (time_t)-1) {
		fprintf(stderr, "jitctl sign: cannot read the clock: %s\n", strerror(errno));
		goto out;
	}

	/*
	 * RFC 7519 allows a single audience as a plain string, which is what most grants carry.
	 * "O" takes a new reference, so aud, src and ports stay ours to release whatever happens.
	 * Durations are capped at DURATION_MAX_SECS, so now + either cannot overflow.
	 */
	aud_claim = json_array_size(aud) == 1 ? json_array_get(aud, 0) : aud;
	if (revocation)
		claims = json_pack("{s:s, s:O, s:s, s:I, s:I}", "iss", arg[S_ISS], "aud", aud_claim,
			"jti", arg[S_JTI], "iat", (json_int_t)now, "exp",
			(json_int_t)now + (json_int_t)valid_for);
	else
		claims = json_pack("{s:s, s:O, s:s, s:s, s:I, s:I}", "iss", arg[S_ISS], "aud",
			aud_claim, "sub", arg[S_SUB], "jti", arg[S_JTI], "iat", (json_int_t)now,
			"exp", (json_int_t)now + (json_int_t)valid_for);
	if (!claims || (arg[S_NBF] && set(claims, "nbf", json_integer((json_int_t)now +
		(json_int_t)not_before))))
		goto nomem;
	/* terminate only when asked: absent and false mean the same to the agent. */
	if (revocation && (set(claims, "revokes", json_string(arg[S_REVOKES])) ||
		(terminate && set(claims, "terminate", json_true()))))
		goto nomem;
	if (!revocation && (set(claims, "src", json_incref(src)) ||
		set(claims, "ports", json_incref(ports)) ||
		(dst && set(claims, "dst", json_incref(dst))) ||
		(arg[S_REASON] && set(claims, "reason", json_string(arg[S_REASON])))))
		goto nomem;
	if (!(header = json_pack("{s:s, s:s, s:s}", "alg", "EdDSA", "typ",
		revocation ? REVOKE_TYP : GRANT_TYP, "kid", arg[S_KID])) ||
		!(payload = json_dumps(claims, JSON_COMPACT)))
		goto nomem;
	if ((err = jws_sign(header, (const unsigned char *)payload, strlen(payload), key,
		&token))) {
		fprintf(stderr, "jitctl sign: signing failed: %s\n", strerror(-err));
		goto out;
	}
	printf("%s\n", token);
	/* A token lost to a full disk or a closed pipe must not look like success. */
	if (fflush(stdout) == EOF) {
		fprintf(stderr, "jitctl sign: writing the token: %s\n", strerror(errno));
		goto out;
	}
	ret = JITCTL_OK;
	goto out;
fail:
	if (err != -ENOMEM)
		goto usage;
nomem:
	ret = jitctl_out_of_memory("sign");
	goto out;
usage:
	ret = JITCTL_USAGE;
	jitctl_try_help("sign");
out:
	EVP_PKEY_free(key);
	json_decref(aud);
	json_decref(src);
	json_decref(dst);
	json_decref(ports);
	json_decref(claims);
	json_decref(header);
	free(payload);
	free(token);
	return ret;
}

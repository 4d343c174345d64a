/* store.c: pick a store backend from a URL. */
#include <strings.h>

#include "store.h"
#include "store_azure.h"
#include "util.h"

static bool scheme_char_ok(char c, bool first)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return true;
	return !first && ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.');
}

/* file:///abs/path or file://localhost/abs/path. Percent-encoding is not
 * decoded, so a URL with '%' is refused rather than misread. */
static int file_url_path(const char *rest, const char **ret)
{
	if (!strncmp(rest, "localhost/", 10))
		rest += 9;
	if (rest[0] != '/' || strchr(rest, '%') || strchr(rest, '?') || strchr(rest, '#'))
		return -EINVAL;
	*ret = rest;
	return 0;
}

int phi_store_open(const char *url, const char *opts, struct phi_store **ret)
{
	if (!url || !*url || !ret)
		return -EINVAL;

	const char *sep = strstr(url, "://");
	bool is_url = sep && sep > url;
	for (const char *p = url; is_url && p < sep; p++)
		if (!scheme_char_ok(*p, p == url))
			is_url = false;

	if (!is_url) {
		/* a plain path */
		if (opts && *opts)
			return -EINVAL; /* the local backend takes no options */
		return phi_store_local_open(url, ret);
	}

	size_t slen = (size_t)(sep - url);
	if (slen == 4 && !strncasecmp(url, "file", 4)) {
		const char *path;
		int r = file_url_path(sep + 3, &path);
		if (r < 0)
			return r;
		if (opts && *opts)
			return -EINVAL;
		return phi_store_local_open(path, ret);
	}
	if (slen == 2 && !strncmp(url, "az", 2))
		return phi_store_azure_open(url, opts, ret);
	return -EPROTONOSUPPORT;
}

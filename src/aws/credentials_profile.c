/*-------------------------------------------------------------------------
 *
 * credentials_profile.c
 *	  Source 3 of the credentials chain: the shared credentials file.
 *
 * The file is AWS_SHARED_CREDENTIALS_FILE, else $HOME/.aws/credentials;
 * the profile AWS_PROFILE, else "default".  Its INI format is read the way
 * botocore reads it (see read_profile).  It is read on every lookup, so an
 * edited file takes effect at once.  Only keys, with an optional session
 * token, are read: profiles that assume roles or run processes are not
 * supported.
 *
 * IDENTIFICATION
 *	  src/aws/credentials_profile.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <errno.h>

#include "common/string.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"

#include "aws/aws.h"
#include "aws/credentials_sources.h"

/*
 * The shared credentials file: AWS_SHARED_CREDENTIALS_FILE (with "~/"
 * expanded, as the SDKs do), else .aws/credentials in the server's home:
 * $HOME first, as the SDKs use it, then the password database.
 */
static char *
shared_credentials_path(void)
{
	const char *setting = batchproc_aws_env("AWS_SHARED_CREDENTIALS_FILE");
	const char *home_env = batchproc_aws_env("HOME");
	char		home[MAXPGPATH];
	bool		have_home;

	if (home_env)
	{
		strlcpy(home, home_env, sizeof(home));
		have_home = true;
	}
	else
		have_home = get_home_path(home);

	if (setting)
	{
		if (setting[0] == '~' && (setting[1] == '/' || setting[1] == '\0') && have_home)
			return psprintf("%s%s", home, setting + 1);
		return pstrdup(setting);
	}
	if (!have_home)
		return NULL;
	return psprintf("%s/.aws/credentials", home);
}

typedef struct ProfileContents
{
	bool		found;			/* the [profile] section exists */
	char	   *access_key_id;
	char	   *secret_access_key;
	char	   *session_token;
	List	   *names;			/* every section, for the error */
} ProfileContents;

/*
 * Read one profile of an INI file the way botocore does: [name] sections,
 * "key = value" lines with case-insensitive keys, whole-line comments
 * starting with # or ;, no inline comments (a secret may hold any
 * character).  Lines that are none of these (indented sub-settings) are
 * skipped.  Returns false when the file does not exist.
 */
static bool
read_profile(const char *path, const char *profile, ProfileContents *out)
{
	FILE	   *fh;
	StringInfoData line;
	bool		in_profile = false;
	int			lineno = 0;

	memset(out, 0, sizeof(*out));
	fh = AllocateFile(path, "r");
	if (fh == NULL)
	{
		if (errno == ENOENT || errno == ENOTDIR)
			return false;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open AWS shared credentials file \"%s\": %m", path)));
	}

	initStringInfo(&line);
	while (pg_get_line_buf(fh, &line))
	{
		char	   *s = batchproc_cred_trim(line.data);
		char	   *eq;

		lineno++;
		if (*s == '\0' || *s == '#' || *s == ';')
			continue;
		if (*s == '[')
		{
			char	   *close = strchr(s, ']');
			char	   *name;

			if (close == NULL)
			{
				FreeFile(fh);
				ereport(ERROR,
						(errcode(ERRCODE_CONFIG_FILE_ERROR),
						 errmsg("malformed section header in AWS shared credentials file \"%s\", line %d",
								path, lineno),
						 errhint("A section header looks like [profile-name].")));
			}
			*close = '\0';
			name = batchproc_cred_trim(s + 1);
			in_profile = strcmp(name, profile) == 0;
			if (in_profile)
				out->found = true;
			out->names = lappend(out->names, pstrdup(name));
			continue;
		}
		if (!in_profile || (eq = strchr(s, '=')) == NULL)
			continue;
		*eq = '\0';
		if (pg_strcasecmp(batchproc_cred_trim(s), "aws_access_key_id") == 0)
			out->access_key_id = pstrdup(batchproc_cred_trim(eq + 1));
		else if (pg_strcasecmp(batchproc_cred_trim(s), "aws_secret_access_key") == 0)
			out->secret_access_key = pstrdup(batchproc_cred_trim(eq + 1));
		else if (pg_strcasecmp(batchproc_cred_trim(s), "aws_session_token") == 0)
			out->session_token = pstrdup(batchproc_cred_trim(eq + 1));
	}
	if (ferror(fh))
	{
		int			save_errno = errno;

		FreeFile(fh);
		errno = save_errno;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read AWS shared credentials file \"%s\": %m", path)));
	}
	FreeFile(fh);
	/* The line buffer held secrets; do not leave them in freed memory. */
	explicit_bzero(line.data, line.maxlen);
	return true;
}

/*
 * Source 3.  Without AWS_PROFILE a missing file, a missing [default] or a
 * [default] without keys moves on; a profile the administrator named must
 * exist and hold keys, or signing with whatever comes next would use an
 * identity nobody asked for.
 */
bool
batchproc_cred_from_profile(FoundCredentials *found, List **looked)
{
	const char *named = batchproc_aws_env("AWS_PROFILE");
	const char *profile = named ? named : "default";
	char	   *path = shared_credentials_path();
	ProfileContents contents;
	char	   *where;

	if (path == NULL)
	{
		*looked = lappend(*looked,
						  "no shared credentials file (the server has neither HOME nor a home directory)");
		if (named)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("AWS profile \"%s\" not found", profile),
					 errdetail("AWS_PROFILE names profile \"%s\", but the server has no home directory to find .aws/credentials in.",
							   profile),
					 errhint("Set AWS_SHARED_CREDENTIALS_FILE in the server's environment.")));
		return false;
	}

	if (!read_profile(path, profile, &contents))
	{
		if (named)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("AWS profile \"%s\" not found", profile),
					 errdetail("AWS_PROFILE names profile \"%s\", but the shared credentials file \"%s\" does not exist.",
							   profile, path),
					 errhint("Create the file with a [%s] section, point AWS_SHARED_CREDENTIALS_FILE at the file that has one, or unset AWS_PROFILE.",
							 profile)));
		*looked = lappend(*looked,
						  psprintf("the shared credentials file \"%s\" (not found)", path));
		return false;
	}

	if (!contents.found)
	{
		if (named)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("AWS profile \"%s\" not found", profile),
					 contents.names ?
					 errdetail("AWS_PROFILE names profile \"%s\", but the shared credentials file \"%s\" has only %s.",
							   profile, path, batchproc_cred_join_list(contents.names)) :
					 errdetail("AWS_PROFILE names profile \"%s\", but the shared credentials file \"%s\" has no profiles.",
							   profile, path),
					 errhint("Add a [%s] section to the file, or set AWS_PROFILE to one of its profiles.",
							 profile)));
		*looked = lappend(*looked,
						  psprintf("the shared credentials file \"%s\" (no profile \"default\")", path));
		return false;
	}

	where = psprintf("profile \"%s\" of \"%s\"", profile, path);
	if (!batchproc_cred_key_pair(contents.access_key_id, contents.secret_access_key,
				  "aws_access_key_id", "aws_secret_access_key", where))
	{
		if (named)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("AWS profile \"%s\" has no access keys", profile),
					 errdetail("Profile \"%s\" of \"%s\" sets neither aws_access_key_id nor aws_secret_access_key; batchproc reads only static keys from the shared credentials file.",
							   profile, path),
					 errhint("Add aws_access_key_id and aws_secret_access_key to the profile, or unset AWS_PROFILE and give the server a role through web identity, a container or the instance.")));
		*looked = lappend(*looked,
						  psprintf("the shared credentials file \"%s\" (profile \"default\" has no keys)", path));
		return false;
	}

	found->access_key_id = contents.access_key_id;
	found->secret_access_key = contents.secret_access_key;
	found->session_token = (contents.session_token && contents.session_token[0]) ?
		contents.session_token : NULL;
	found->expires_at = 0;
	found->source = psprintf("profile %s", profile);
	return true;
}

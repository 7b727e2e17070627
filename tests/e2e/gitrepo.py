"""Real git repositories for end-to-end tests: a bare repository whose
post-receive hook posts a GitHub-shaped, HMAC-signed push webhook to the
server with curl, as GitHub would."""

import os
import subprocess
import textwrap

HOOK = textwrap.dedent(r"""
    #!/bin/sh
    # post-receive: one GitHub push webhook per updated ref.
    while read old new ref; do
        deleted=false
        case "$new" in 0000000000000000000000000000000000000000) deleted=true ;; esac
        msg=""
        if [ "$deleted" = false ]; then
            msg=$(git log -1 --format=%B "$new" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | awk 'BEGIN{ORS="\\n"} {print}')
        fi
        delivery=$(cat /proc/sys/kernel/random/uuid)
        body="{\"ref\":\"$ref\",\"before\":\"$old\",\"after\":\"$new\",\"deleted\":$deleted,\"head_commit\":{\"id\":\"$new\",\"message\":\"$msg\"},\"repository\":{\"full_name\":\"$SPOOL_REPO\"},\"pusher\":{\"name\":\"$SPOOL_PUSHER\"}}"
        sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$SPOOL_SECRET" | sed 's/^.* //')
        printf '%s\n' "$delivery" >> "$SPOOL_DELIVERIES"
        curl -s -o /dev/null -w '%{http_code}\n' -X POST "$SPOOL_URL/webhooks/github" \
            -H "Content-Type: application/json" -H "X-GitHub-Event: push" \
            -H "X-GitHub-Delivery: $delivery" -H "X-Hub-Signature-256: sha256=$sig" \
            --data-binary "$body" >> "$SPOOL_HOOK_LOG"
    done
""").lstrip()


def git(cwd, *args, env=None, check=True):
    e = dict(os.environ, GIT_AUTHOR_NAME="Ada", GIT_AUTHOR_EMAIL="ada@example.com", GIT_COMMITTER_NAME="Ada",
             GIT_COMMITTER_EMAIL="ada@example.com", **(env or {}))
    p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=e)
    if check and p.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {p.stderr}")
    return p.stdout.strip()


class Repo:
    """A bare repository (the "GitHub" side) and a working clone."""

    def __init__(self, root, full_name="acme/app"):
        self.root = str(root)
        self.full_name = full_name
        self.bare = os.path.join(self.root, "app.git")
        self.work = os.path.join(self.root, "work")
        self.hook_log = os.path.join(self.root, "hook.log")
        self.deliveries = os.path.join(self.root, "deliveries.log")
        os.makedirs(self.root, exist_ok=True)
        git(self.root, "init", "-q", "--bare", "-b", "main", self.bare)
        git(self.root, "clone", "-q", self.bare, self.work)
        git(self.work, "checkout", "-q", "-b", "main")

    @property
    def url(self):
        return "file://" + self.bare

    def hook(self, server_url, secret, pusher="ada"):
        path = os.path.join(self.bare, "hooks", "post-receive")
        with open(path, "w") as f:
            f.write(HOOK)
        os.chmod(path, 0o755)
        self.env = {"SPOOL_URL": server_url, "SPOOL_SECRET": secret, "SPOOL_REPO": self.full_name,
                    "SPOOL_PUSHER": pusher, "SPOOL_HOOK_LOG": self.hook_log, "SPOOL_DELIVERIES": self.deliveries}

    def write(self, path, text):
        full = os.path.join(self.work, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)

    def commit(self, message, files=None):
        for path, text in (files or {}).items():
            self.write(path, text)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "--allow-empty", "-m", message)
        return git(self.work, "rev-parse", "HEAD")

    def push(self, ref="main", *extra):
        git(self.work, "push", "-q", "origin", *extra, ref, env=getattr(self, "env", {}))

    def hook_statuses(self):
        if not os.path.exists(self.hook_log):
            return []
        with open(self.hook_log) as f:
            return [int(line) for line in f if line.strip()]

    def last_delivery(self):
        with open(self.deliveries) as f:
            return f.read().split()[-1]

/*
 * runtara-launcher: creates the long-lived processes the environment starts (workflows,
 * `runc run`). Forking this small process instead of Node (whose fork and exec teardown cost
 * milliseconds of CPU per start) also lets each child join its cgroup, take its RLIMIT_FSIZE,
 * session, stdio, working directory and user before it execs: the workflow's first
 * instruction already runs inside its limits, with exactly the environment it was given.
 *
 * Joining a cgroup waits for an RCU grace period host-wide (cgroup v1, or v2 without
 * favordynmods): 6-14 ms when starts are not back to back. So a few processes are forked
 * ahead of time, each already in a new cgroup of its own, and wait for a request; a start
 * then only writes its limits and execs. Creating and joining happen in the child, so they
 * hold up neither this process nor the environment.
 *
 * Started by the environment itself (spawner.ts) with its pid as the argument. Requests on
 * stdin, each "<length>\n" and then <length> bytes of NUL-terminated fields:
 *   id, file, cwd, uid, gid, detached (0/1), own cwd (0/1: the child makes its working
 *   directory its own, 0700 and owned by uid/gid, before it enters it), stdout fd, stderr fd,
 *   file size limit,
 *   count and cgroup parent directories (one per hierarchy, the v2 one first; none: no
 *   cgroup), the prefix of the cgroup's name, count and limits (hierarchy index, file, value;
 *   the count is of fields), count and files read at the end (hierarchy index, file; the
 *   count is of fields), how many processes to keep forked ahead for such starts,
 *   count and arguments (after argv[0]),
 *   count and environment entries, or "-" for this process's own environment.
 * An empty cwd, uid, gid, fd or limit means none. The fds are the environment's, reopened
 * through /proc/<pid>/fd. Answers on stdout, one line each:
 *   "P <id> <pid> <start time> <cgroup>"  the child exec'd (start time: /proc/<pid>/stat
 *                                         field 22; cgroup: its name, or "-")
 *   "F <id> <errno> <step>"               it could not; nothing runs, its cgroup is removed
 *   "X <id> <code> <signal>"              a started child exited ("-" for what does not apply)
 *   "X <id> <code> <signal> = <value>..." one with a cgroup exited, and then everything left in
 *                                         its cgroup was killed, the files to read at the end
 *                                         read (each its first number, "-" if none) and the
 *                                         cgroup removed: the run's end, off the environment
 *                                         ("~" instead of "=": something in it would not die,
 *                                         and the cgroup is left)
 * It exits when stdin closes or the environment is gone: what it answered for lives on
 * (detached, adopted later by pid), what it did not, and what it forked ahead, is killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Far above any real request (arguments and environment are bounded by the kernel's exec limits). */
#define MAX_REQUEST (64u << 20)

struct request {
  const char *id, *file, *cwd;
  long uid, gid, out_fd, err_fd, file_size; /* -1: none */
  int detached, own_cwd;
  unsigned nparents, nlimits;
  char **parents; /* the cgroup's parent directory in each hierarchy */
  const char *prefix;
  char **limits; /* hierarchy index, file, value, ... */
  unsigned nreads;
  char **reads; /* hierarchy index, file, ... */
  long prefork;
  char **argv;
  char **envp; /* NULL: our own */
};

enum state {
  JOINING,   /* forked ahead, creating and joining its cgroup */
  READY,     /* forked ahead, in its cgroup, waiting for a request on cmd_fd */
  LAUNCHING, /* given a request; its exec or failure comes through status_fd */
  RUNNING,   /* exec'd and answered for */
  FAILED,    /* did not exec; exits or has exited */
  ENDING,    /* exited (reaped) with a cgroup: emptying, reading and removing it (see end_run) */
};

/* At most this many files are read at a run's end (memory and CPU). */
#define MAX_READS 4

struct child {
  char id[24]; /* of the request; "" while forked ahead */
  pid_t pid;
  int status_fd; /* read end of its close-on-exec status pipe, -1 once settled */
  int cmd_fd;    /* forked ahead: write end of its request pipe, else -1 */
  enum state state;
  char cgroup[96]; /* its cgroup's name, "" for none */
  char **parents;  /* where that cgroup is: ahead.parents, or its own copy for other parents */
  unsigned nparents;
  int detached;
  unsigned nreads;
  struct {
    unsigned hierarchy;
    char file[32];
    char value[24];
  } reads[MAX_READS];
  /* ENDING: its wait status, and until when the cgroup may take to empty and to go. */
  int status;
  long long empty_by, removed_by;
  int killed; /* cgroup.kill was written (kernel 5.14+); otherwise the listed pids are killed each round */
  int emptied;
};

/* Where cgroups go (and those of processes forked ahead): set by the first request with one. */
static struct {
  unsigned nparents;
  char **parents;
  char *prefix;
  long size;
  int broken; /* one could not join its cgroup: fork fresh (which reports why) until a fresh one could */
} ahead;

static pid_t environment, launcher;
/* Set in a forked child: the exits below then leave the launcher's children alone. */
static int in_child;
static struct child *children;
static size_t nchildren, capchildren;

static _Noreturn void quit(int code);

static void *grow(void *p, size_t n) {
  void *q = realloc(p, n);
  if (q == NULL) quit(70);
  return q;
}

/* The environment reads every line; if it is gone, so is our reason to run. */
static void say(const char *fmt, ...) {
  char line[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  for (int off = 0; off < n;) {
    ssize_t w = write(1, line + off, (size_t)(n - off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) quit(0);
    off += (int)w;
  }
}

/* The start of a small (proc, cgroup) file, NUL-terminated; its length, or -1. */
static ssize_t read_start(const char *file, char *buf, size_t size) {
  int fd = open(file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, size - 1);
  close(fd);
  buf[n > 0 ? n : 0] = 0;
  return n;
}

/* Field 22 of /proc/<pid>/stat: clock ticks since boot, what adoption compares a pid with. */
static unsigned long long start_time(pid_t pid) {
  char path[40], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  if (read_start(path, buf, sizeof buf) <= 0) return 0;
  char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
  if (p == NULL) return 0;
  p += 2; /* field 3 */
  for (int field = 3; field < 22 && p != NULL; field++) {
    p = strchr(p, ' ');
    if (p != NULL) p++;
  }
  return p == NULL ? 0 : strtoull(p, NULL, 10);
}

/* Only the environment writes requests, so a malformed one is a bug there: stop rather than guess. */
static _Noreturn void bad_request(const char *why) {
  fprintf(stderr, "runtara-launcher: bad request: %s\n", why);
  quit(65);
}

static const char *field(char **p, char *end) {
  if (*p >= end) bad_request("too few fields");
  char *f = *p, *nul = memchr(f, 0, (size_t)(end - f));
  if (nul == NULL) bad_request("unterminated field");
  *p = nul + 1;
  return f;
}

static unsigned count(const char *f, char **p, char *end) {
  char *rest;
  unsigned long n = strtoul(f, &rest, 10);
  if (*f == 0 || *rest != 0 || n > (unsigned long)(end - *p)) bad_request("bad count");
  return (unsigned)n;
}

static char **strings(char **p, char *end, unsigned n, const char *first) {
  char **list = grow(NULL, (n + 2) * sizeof *list);
  unsigned i = 0;
  if (first != NULL) list[i++] = (char *)first;
  for (unsigned k = 0; k < n; k++) list[i++] = (char *)field(p, end);
  list[i] = NULL;
  return list;
}

/* A non-negative number, or -1 for an empty field. */
static long optional(const char *s) {
  if (*s == 0) return -1;
  char *rest;
  errno = 0;
  long v = strtol(s, &rest, 10);
  if (*rest != 0 || errno != 0 || v < 0) bad_request("bad number");
  return v;
}

enum step { STEP_FORK, STEP_SETSID, STEP_MKCGROUP, STEP_CGROUP, STEP_LIMITS, STEP_RLIMIT, STEP_STDIO, STEP_OWN_CWD, STEP_CWD, STEP_USER, STEP_EXEC };
static const char *const STEP_NAMES[] = {"fork", "setsid", "mkcgroup", "cgroup", "limits", "rlimit", "stdio", "owncwd", "cwd", "user", "exec"};

struct failure {
  int err, step;
};

static _Noreturn void child_failed(int status_fd, enum step step) {
  struct failure f = {errno, step};
  prctl(PR_SET_PDEATHSIG, 0);
  (void)!write(status_fd, &f, sizeof f);
  _exit(127);
}

/* Writes an existing (cgroup) file in one write, as the kernel takes its value. */
static int write_file(const char *file, const char *value) {
  int fd = open(file, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t n = strlen(value);
  ssize_t w = write(fd, value, n);
  int err = errno;
  close(fd);
  errno = err;
  if (w >= 0 && (size_t)w != n) errno = EIO;
  return w >= 0 && (size_t)w == n ? 0 : -1;
}

/* One of the environment's descriptors as a new open file; O_NONBLOCK so a FIFO cannot block us. */
static int environment_fd(long fd) {
  if (fd < 0) return open("/dev/null", O_WRONLY | O_CLOEXEC);
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd/%ld", (int)environment, fd);
  return open(path, O_WRONLY | O_APPEND | O_NONBLOCK | O_CLOEXEC);
}

/* "<parent>/<name>[/<file>]" into out (PATH_MAX); -1 (ENAMETOOLONG) when it does not fit. */
static int cgroup_path(char *out, const char *parent, const char *name, const char *file) {
  int n = file != NULL ? snprintf(out, PATH_MAX, "%s/%s/%s", parent, name, file) : snprintf(out, PATH_MAX, "%s/%s", parent, name);
  if (n < 0 || n >= PATH_MAX) {
    errno = ENAMETOOLONG;
    return -1;
  }
  return 0;
}

/* In a child: creates its cgroup `name` under each parent and moves itself into it. */
static void join_cgroup(char *const *parents, unsigned n, const char *name, int status_fd) {
  char path[PATH_MAX], pid[24];
  for (unsigned i = 0; i < n; i++)
    if (cgroup_path(path, parents[i], name, NULL) < 0 || (mkdir(path, 0755) < 0 && errno != EEXIST)) child_failed(status_fd, STEP_MKCGROUP);
  snprintf(pid, sizeof pid, "%d", (int)getpid());
  for (unsigned i = 0; i < n; i++)
    if (cgroup_path(path, parents[i], name, "cgroup.procs") < 0 || write_file(path, pid) < 0) child_failed(status_fd, STEP_CGROUP);
}

/*
 * In the child: everything that may fail happens before exec, and is reported through
 * status_fd. `joined`: it was forked ahead and is in its cgroup `cgroup` already.
 */
static _Noreturn void become(const struct request *r, int status_fd, const char *cgroup, int joined) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGPIPE, SIG_DFL);
  if (r->detached && setsid() < 0) child_failed(status_fd, STEP_SETSID);
  if (r->nparents > 0) {
    if (!joined) join_cgroup(r->parents, r->nparents, cgroup, status_fd);
    char path[PATH_MAX];
    for (unsigned i = 0; i + 2 < r->nlimits; i += 3)
      if (cgroup_path(path, r->parents[optional(r->limits[i])], cgroup, r->limits[i + 1]) < 0 || write_file(path, r->limits[i + 2]) < 0)
        child_failed(status_fd, STEP_LIMITS);
  }
  if (r->file_size >= 0) {
    struct rlimit rl = {(rlim_t)r->file_size, (rlim_t)r->file_size};
    if (setrlimit(RLIMIT_FSIZE, &rl) < 0) child_failed(status_fd, STEP_RLIMIT);
  }

  int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int out = environment_fd(r->out_fd);
  int err = environment_fd(r->err_fd);
  if (in < 0 || out < 0 || err < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) child_failed(status_fd, STEP_STDIO);
  for (int fd = 0; fd <= 2; fd++) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);

  if (r->own_cwd && *r->cwd != 0) {
    if ((r->uid >= 0 || r->gid >= 0) && chown(r->cwd, r->uid >= 0 ? (uid_t)r->uid : (uid_t)-1, r->gid >= 0 ? (gid_t)r->gid : (gid_t)-1) < 0) child_failed(status_fd, STEP_OWN_CWD);
    if (chmod(r->cwd, 0700) < 0) child_failed(status_fd, STEP_OWN_CWD);
  }
  if (*r->cwd != 0 && chdir(r->cwd) < 0) child_failed(status_fd, STEP_CWD);
  if (r->uid >= 0 || r->gid >= 0) {
    (void)!setgroups(0, NULL); /* fails unprivileged, where there are no groups to drop */
    if (r->gid >= 0 && setgid((gid_t)r->gid) < 0) child_failed(status_fd, STEP_USER);
    if (r->uid >= 0 && setuid((uid_t)r->uid) < 0) child_failed(status_fd, STEP_USER);
  }
  char **envp = r->envp != NULL ? r->envp : environ;
  prctl(PR_SET_PDEATHSIG, 0); /* answered for from its exec on: it outlives the launcher */
  if (strchr(r->file, '/') != NULL) execve(r->file, r->argv, envp);
  else execvpe(r->file, r->argv, envp);
  child_failed(status_fd, STEP_EXEC);
}

/*
 * First thing in a forked child: until its exec it dies with the launcher (nobody would
 * answer for it; the kernel drops this at setuid, microseconds before the exec), and the
 * launcher's exits are not its own.
 */
static void forked(void) {
  in_child = 1;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != launcher) _exit(0);
}

/* Parses a request body (see the top); its strings stay in the body. */
static void parse(char *body, char *end, struct request *r) {
  char *p = body;
  r->id = field(&p, end);
  r->file = field(&p, end);
  r->cwd = field(&p, end);
  r->uid = optional(field(&p, end));
  r->gid = optional(field(&p, end));
  r->detached = strcmp(field(&p, end), "1") == 0;
  r->own_cwd = strcmp(field(&p, end), "1") == 0;
  r->out_fd = optional(field(&p, end));
  r->err_fd = optional(field(&p, end));
  r->file_size = optional(field(&p, end));
  r->nparents = count(field(&p, end), &p, end);
  r->parents = strings(&p, end, r->nparents, NULL);
  r->prefix = field(&p, end);
  r->nlimits = count(field(&p, end), &p, end);
  r->limits = strings(&p, end, r->nlimits, NULL);
  if (r->nlimits % 3 != 0) bad_request("limits are not triples");
  for (unsigned i = 0; i < r->nlimits; i += 3)
    if (optional(r->limits[i]) < 0 || optional(r->limits[i]) >= (long)r->nparents || strchr(r->limits[i + 1], '/') != NULL) bad_request("bad limit");
  r->nreads = count(field(&p, end), &p, end);
  r->reads = strings(&p, end, r->nreads, NULL);
  if (r->nreads % 2 != 0 || r->nreads / 2 > MAX_READS) bad_request("reads are not pairs");
  for (unsigned i = 0; i < r->nreads; i += 2)
    if (optional(r->reads[i]) < 0 || optional(r->reads[i]) >= (long)r->nparents || strchr(r->reads[i + 1], '/') != NULL || strlen(r->reads[i + 1]) >= 32) bad_request("bad read");
  r->prefork = optional(field(&p, end));
  unsigned nargs = count(field(&p, end), &p, end);
  r->argv = strings(&p, end, nargs, r->file);
  const char *env = field(&p, end);
  r->envp = strcmp(env, "-") == 0 ? NULL : strings(&p, end, count(env, &p, end), NULL);
  if (p != end || strlen(r->id) >= sizeof children->id) bad_request("trailing bytes or long id");
  if (strlen(r->prefix) > 64 || strchr(r->prefix, '/') != NULL || (r->nparents > 0 && *r->prefix == 0)) bad_request("bad cgroup prefix");
}

static void free_request(struct request *r) {
  free(r->parents);
  free(r->limits);
  free(r->reads);
  free(r->argv);
  free(r->envp);
}

/* A new cgroup name: the prefix and 16 random hex digits. */
static void cgroup_name(char out[96], const char *prefix) {
  unsigned char b[8] = {0};
  (void)!getrandom(b, sizeof b, 0);
  snprintf(out, 96, "%s%02x%02x%02x%02x%02x%02x%02x%02x", prefix, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]);
}

static char **copy_strings(char *const *list, unsigned n) {
  char **copy = grow(NULL, (n + 1) * sizeof *copy);
  for (unsigned i = 0; i < n; i++) copy[i] = strdup(list[i]);
  return copy;
}

static void free_strings(char **list, unsigned n) {
  for (unsigned i = 0; i < n; i++) free(list[i]);
  free(list);
}

static int fits_ahead(const struct request *r);

/* What the request of a child says of its run's end: whose group to kill, what to read (see end_run). */
static void take(struct child *c, const struct request *r) {
  c->detached = r->detached;
  c->nreads = r->nparents > 0 ? r->nreads / 2 : 0;
  for (unsigned i = 0; i < c->nreads; i++) {
    c->reads[i].hierarchy = (unsigned)optional(r->reads[2 * i]);
    snprintf(c->reads[i].file, sizeof c->reads[i].file, "%s", r->reads[2 * i + 1]);
  }
}

/* `r`: the request whose cgroup the child gets (NULL: one forked ahead, under ahead.parents). */
static struct child *add_child(pid_t pid, int status_fd, int cmd_fd, enum state state, const char *id, const char *cgroup, const struct request *r) {
  if (nchildren == capchildren) children = grow(children, (capchildren = capchildren * 2 + 16) * sizeof *children);
  struct child *c = &children[nchildren++];
  snprintf(c->id, sizeof c->id, "%s", id);
  c->pid = pid;
  c->status_fd = status_fd;
  c->cmd_fd = cmd_fd;
  c->state = state;
  snprintf(c->cgroup, sizeof c->cgroup, "%s", cgroup);
  int own = r != NULL && r->nparents > 0 && !fits_ahead(r);
  c->parents = own ? copy_strings(r->parents, r->nparents) : ahead.parents;
  c->nparents = own ? r->nparents : ahead.nparents;
  c->detached = 0;
  c->nreads = 0;
  c->killed = c->emptied = 0;
  if (r != NULL) take(c, r);
  return c;
}

static void forget(size_t i) {
  struct child *c = &children[i];
  if (c->parents != ahead.parents) free_strings(c->parents, c->nparents);
  children[i] = children[--nchildren];
}

/* Reads a whole request from fd (blocking): "<length>\n<body>". NULL at EOF. */
static char *read_request(int fd, char **end) {
  char head[24];
  size_t n = 0;
  for (;;) {
    if (n == sizeof head - 1 || read(fd, head + n, 1) != 1) return NULL;
    if (head[n] == '\n') break;
    n++;
  }
  head[n] = 0;
  size_t len = strtoul(head, NULL, 10);
  if (len > MAX_REQUEST) return NULL;
  char *body = grow(NULL, len + 1);
  for (size_t got = 0; got < len;) {
    ssize_t r = read(fd, body + got, len - got);
    if (r <= 0) return NULL;
    got += (size_t)r;
  }
  *end = body + len;
  return body;
}

/* Closes every descriptor from `first` on (kernels before 5.9, or a seccomp filter, lack close_range). */
static void close_from(unsigned first) {
  if (syscall(SYS_close_range, first, ~0U, 0U) < 0)
    for (int fd = (int)first; fd < 4096; fd++) close(fd);
}

/*
 * A process forked ahead: keeps only its own pipes (3: requests, 4: status) and stdio on
 * /dev/null, joins its cgroup, says 'R' and waits. Its request's end (EOF) means it is not
 * needed: the launcher is gone.
 */

static _Noreturn void ahead_main(int cmd_fd, int status_fd, const char *cgroup) {
  int cmd = fcntl(cmd_fd, F_DUPFD, 10), status = fcntl(status_fd, F_DUPFD, 10);
  if (cmd < 0 || status < 0 || dup2(cmd, 3) < 0 || dup2(status, 4) < 0) _exit(71);
  /* The status pipe must close at the exec: that is how the launcher learns of it. */
  if (fcntl(3, F_SETFD, FD_CLOEXEC) < 0 || fcntl(4, F_SETFD, FD_CLOEXEC) < 0) _exit(71);
  int null = open("/dev/null", O_RDWR);
  if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0) _exit(71);
  close_from(5);
  join_cgroup(ahead.parents, ahead.nparents, cgroup, 4);
  if (write(4, "R", 1) != 1) _exit(71);
  char *end;
  char *body = read_request(3, &end);
  if (body == NULL) _exit(0);
  struct request r;
  parse(body, end, &r);
  become(&r, 4, cgroup, 1);
}

/* Keeps `ahead.size` processes forked ahead (joining or ready). */
static void fork_ahead(void) {
  if (ahead.size <= 0 || ahead.broken) return;
  long have = 0;
  for (size_t i = 0; i < nchildren; i++) have += children[i].state == JOINING || children[i].state == READY;
  for (; have < ahead.size; have++) {
    int cmd[2], status[2];
    if (pipe2(cmd, O_CLOEXEC) < 0) return;
    if (pipe2(status, O_CLOEXEC) < 0) {
      close(cmd[0]);
      close(cmd[1]);
      return;
    }
    char name[96];
    cgroup_name(name, ahead.prefix);
    pid_t pid = fork();
    if (pid == 0) {
      forked();
      ahead_main(cmd[0], status[1], name);
    }
    close(cmd[0]);
    close(status[1]);
    if (pid < 0) {
      close(cmd[1]);
      close(status[0]);
      return;
    }
    add_child(pid, status[0], cmd[1], JOINING, "", name, NULL);
  }
}

/* Whether a request's cgroup goes where processes forked ahead are (the same parents and prefix). */
static int fits_ahead(const struct request *r) {
  if (ahead.prefix == NULL || r->nparents != ahead.nparents || strcmp(r->prefix, ahead.prefix) != 0) return 0;
  for (unsigned i = 0; i < r->nparents; i++)
    if (strcmp(r->parents[i], ahead.parents[i]) != 0) return 0;
  return 1;
}

static void start(char *frame, size_t frame_len, char *body, char *end) {
  struct request r;
  parse(body, end, &r);
  /* The first request with a cgroup says where they go (one environment, one native runner). */
  if (r.nparents > 0 && ahead.prefix == NULL) {
    ahead.nparents = r.nparents;
    ahead.parents = grow(NULL, r.nparents * sizeof *ahead.parents);
    for (unsigned i = 0; i < r.nparents; i++) ahead.parents[i] = strdup(r.parents[i]);
    ahead.prefix = strdup(r.prefix);
    ahead.size = r.prefork < 0 ? 0 : r.prefork > 16 ? 16 : r.prefork;
  }

  struct child *ready = NULL;
  if (r.nparents > 0 && fits_ahead(&r))
    for (size_t i = 0; i < nchildren && ready == NULL; i++)
      if (children[i].state == READY) ready = &children[i];
  if (ready != NULL) {
    /* It reads the same request and becomes it; a failure or its exec comes through its status pipe. */
    int ok = 1;
    for (size_t off = 0; off < frame_len && ok;) {
      ssize_t w = write(ready->cmd_fd, frame + off, frame_len - off);
      if (w < 0 && errno == EINTR) continue;
      ok = w > 0;
      off += w > 0 ? (size_t)w : 0;
    }
    close(ready->cmd_fd);
    ready->cmd_fd = -1;
    if (ok) {
      snprintf(ready->id, sizeof ready->id, "%s", r.id);
      take(ready, &r);
      ready->state = LAUNCHING;
      free_request(&r);
      fork_ahead();
      return;
    }
    /* It died meanwhile (its reaping removes it): start this one fresh. */
    kill(ready->pid, SIGKILL);
    ready->state = FAILED;
  }

  char name[96] = "";
  if (r.nparents > 0) cgroup_name(name, r.prefix);
  int pipe_fds[2];
  pid_t pid = -1;
  int fork_errno = 0;
  if (pipe2(pipe_fds, O_CLOEXEC) == 0) {
    pid = fork();
    if (pid == 0) {
      forked();
      become(&r, pipe_fds[1], name, 0);
    }
    fork_errno = errno;
    close(pipe_fds[1]);
    if (pid < 0) close(pipe_fds[0]);
  } else {
    fork_errno = errno;
  }
  if (pid < 0) say("F %s %d %s %s\n", r.id, fork_errno, STEP_NAMES[STEP_FORK], strerror(fork_errno));
  else add_child(pid, pipe_fds[0], -1, LAUNCHING, r.id, name, &r);
  free_request(&r);
  fork_ahead();
}

/* Removes a child's cgroup in every hierarchy; returns whether one is still busy (EBUSY: something in it). */
static int remove_cgroup(const struct child *c) {
  char path[PATH_MAX];
  int busy = 0;
  for (unsigned i = 0; *c->cgroup != 0 && i < c->nparents; i++)
    if (cgroup_path(path, c->parents[i], c->cgroup, NULL) == 0 && rmdir(path) < 0 && errno == EBUSY) busy = 1;
  return busy;
}

/*
 * Reads a child's status pipe. Forked ahead: 'R' (ready) or a failure (forking ahead stops:
 * fresh forks report the cause). Launching: closed empty by the exec, or a failure written
 * before _exit.
 */
static void settle(struct child *c) {
  struct failure f;
  ssize_t n;
  do n = read(c->status_fd, &f, sizeof f);
  while (n < 0 && errno == EINTR);
  if (c->state == JOINING) {
    if (n == 1) {
      c->state = READY;
      return; /* the pipe stays open: a failure after its request comes through it */
    }
    if (!ahead.broken) fprintf(stderr, "runtara-launcher: a process forked ahead could not join its cgroup (errno %d); forking on demand until a start can\n", n == (ssize_t)sizeof f ? f.err : 0);
    ahead.broken = 1;
    c->state = FAILED;
  } else if (n == (ssize_t)sizeof f) {
    c->state = FAILED;
    say("F %s %d %s %s\n", c->id, f.err, STEP_NAMES[f.step], strerror(f.err));
  } else {
    /* Not reaped before we say so: /proc/<pid> still names this child. */
    c->state = RUNNING;
    if (*c->cgroup != 0) ahead.broken = 0; /* cgroups can be joined (again) */
    say("P %s %d %llu %s\n", c->id, (int)c->pid, start_time(c->pid), *c->cgroup != 0 ? c->cgroup : "-");
  }
  close(c->status_fd);
  c->status_fd = -1;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* The first decimal number in a (cgroup) file; "-" when there is none. */
static void read_number(const char *file, char out[24]) {
  char buf[256];
  strcpy(out, "-");
  if (read_start(file, buf, sizeof buf) <= 0) return;
  size_t at = strcspn(buf, "0123456789"), len = strspn(buf + at, "0123456789");
  if (len > 0 && len < 24) snprintf(out, 24, "%.*s", (int)len, buf + at);
}

/* Whether nothing is left in the child's cgroup; without cgroup.kill, kills what is listed. */
static int cgroup_empty(const struct child *c) {
  char path[PATH_MAX], buf[4096];
  if (cgroup_path(path, c->parents[0], c->cgroup, "cgroup.procs") < 0 || read_start(path, buf, sizeof buf) <= 0) return 1;
  if (!c->killed)
    for (char *p = buf, *next;; p = next) {
      long pid = strtol(p, &next, 10);
      if (next == p) break;
      if (pid > 1) kill((pid_t)pid, SIGKILL);
    }
  return 0;
}

static void say_exit(const struct child *c, const char *more) {
  if (WIFSIGNALED(c->status)) {
    const char *name = sigabbrev_np(WTERMSIG(c->status));
    if (name != NULL) say("X %s - SIG%s%s\n", c->id, name, more);
    else say("X %s - SIG%d%s\n", c->id, WTERMSIG(c->status), more);
  } else {
    say("X %s %d -%s\n", c->id, WEXITSTATUS(c->status), more);
  }
}

/*
 * The end of a run with a cgroup, after its process was reaped: kills what it left (its
 * group; through the cgroup what left the group), reads the files asked for, removes the
 * cgroup and says so. Called again from the main loop every few ms (ENDING) while the cgroup
 * is not empty yet or refuses removal (EBUSY while its last process exits); after a while it
 * goes on with what it has. Returns whether it is done.
 */
static int end_run(struct child *c) {
  char path[PATH_MAX];
  long long now = now_ms();
  if (c->state != ENDING) {
    c->state = ENDING;
    if (c->detached) kill(-c->pid, SIGKILL); /* reaped just now: the group id is still the run's, if anyone is in it */
    c->killed = cgroup_path(path, c->parents[0], c->cgroup, "cgroup.kill") == 0 && write_file(path, "1") == 0;
    c->empty_by = now + 1000;
  }
  if (!c->emptied) {
    if (!cgroup_empty(c) && now < c->empty_by) return 0;
    c->emptied = 1;
    for (unsigned i = 0; i < c->nreads; i++) {
      strcpy(c->reads[i].value, "-");
      if (cgroup_path(path, c->parents[c->reads[i].hierarchy], c->cgroup, c->reads[i].file) == 0) read_number(path, c->reads[i].value);
    }
    c->removed_by = now + 2000;
  }
  int busy = remove_cgroup(c);
  if (busy && now < c->removed_by) return 0;
  char more[2 + MAX_READS * 25];
  strcpy(more, busy ? " ~" : " =");
  for (unsigned i = 0; i < c->nreads; i++) {
    strcat(more, " ");
    strcat(more, c->reads[i].value);
  }
  say_exit(c, more);
  return 1;
}

/* Moves the ends of runs along (see end_run). */
static void end_runs(void) {
  for (size_t i = nchildren; i-- > 0;)
    if (children[i].state == ENDING && end_run(&children[i])) forget(i);
}

static void reap(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (size_t i = 0; i < nchildren; i++) {
      struct child *c = &children[i];
      if (c->pid != pid || c->state == ENDING) continue; /* an ENDING one's pid is free for reuse */
      if (c->status_fd >= 0 && c->state != READY) settle(c); /* it exited before we read its pipe: the answer is there */
      if (c->status_fd >= 0) close(c->status_fd);
      if (c->cmd_fd >= 0) close(c->cmd_fd);
      c->status_fd = c->cmd_fd = -1;
      c->status = status;
      if (c->state == RUNNING && *c->cgroup != 0) {
        if (!end_run(c)) break;
      } else if (c->state == RUNNING) {
        say_exit(c, "");
      } else {
        remove_cgroup(c); /* it never ran a workflow: its cgroup is empty now */
      }
      forget(i);
      break;
    }
  }
  fork_ahead();
}

/*
 * Every way out of the launcher: a child not answered for is recorded nowhere, so it must
 * not run (with what it forked, if it exec'd); those forked ahead go too, and the cgroups of
 * all of them. What was answered for lives on. In a forked child: just exits.
 */
static _Noreturn void quit(int code) {
  if (in_child) _exit(code);
  for (size_t i = 0; i < nchildren; i++) {
    struct child *c = &children[i];
    if (c->state == RUNNING || c->state == FAILED || c->state == ENDING) continue;
    kill(-c->pid, SIGKILL); /* its group, once it made its own session */
    kill(c->pid, SIGKILL);
    while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR) {
    }
    remove_cgroup(c);
  }
  _exit(code);
}

int main(int argc, char **argv) {
  launcher = getpid();
  /* 1 too: the environment may be a container's first process (no init before it). */
  if (argc != 2 || (environment = (pid_t)atoi(argv[1])) < 1) {
    fprintf(stderr, "usage: runtara-launcher <pid of the environment>\n");
    return 64;
  }
  /* What the environment inherited from its own parent without close-on-exec (a shell's or
     supervisor's extra descriptors, a CI runner's pipes) would reach every workflow. */
  close_from(3);
  /* A child's stdio is dup2'd onto 0-2: they must be ours, not a descriptor we opened for it. */
  for (int fd = 0; fd <= 2; fd++)
    if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd) return 71;
  /* Its own group: a Ctrl-C or group signal aimed at the environment ends it through stdin's
     end, and a signal of its own through quit(), never without cleaning up. */
  setpgid(0, 0);
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigaddset(&chld, SIGTERM);
  sigaddset(&chld, SIGINT);
  sigaddset(&chld, SIGHUP);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) return 71;

  char *buf = NULL;
  size_t len = 0, cap = 0;
  struct pollfd *fds = NULL;
  size_t capfds = 0;
  for (;;) {
    if (capfds < nchildren + 2) fds = grow(fds, (capfds = nchildren * 2 + 16) * sizeof *fds);
    fds[0] = (struct pollfd){.fd = 0, .events = POLLIN};
    fds[1] = (struct pollfd){.fd = sfd, .events = POLLIN};
    size_t nfds = 2;
    int ending = 0; /* runs whose cgroup is still emptying or busy are looked at again in 5 ms */
    for (size_t i = 0; i < nchildren; i++) {
      if (children[i].status_fd >= 0 && children[i].state != READY) fds[nfds++] = (struct pollfd){.fd = children[i].status_fd, .events = POLLIN};
      ending |= children[i].state == ENDING;
    }
    int ready = poll(fds, nfds, ending ? 5 : -1);
    if (ready < 0 && errno != EINTR) return 71;
    if (ending) end_runs();
    if (ready <= 0) continue;
    /* Pipes first: a child that exec'd is answered before its exit, which reap() reports. */
    for (size_t k = 2; k < nfds; k++) {
      if (fds[k].revents == 0) continue;
      for (size_t i = 0; i < nchildren; i++)
        if (children[i].status_fd == fds[k].fd) {
          settle(&children[i]);
          break;
        }
    }
    if (fds[1].revents != 0) {
      struct signalfd_siginfo info;
      while (read(sfd, &info, sizeof info) > 0)
        if (info.ssi_signo != SIGCHLD) quit(0);
      reap();
    }
    if (fds[0].revents == 0) continue;
    if (cap - len < 65536) buf = grow(buf, cap = cap * 2 + 65536);
    ssize_t n = read(0, buf + len, cap - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) quit(0); /* the environment is gone */
    /* Requests still buffered when it died are not started: nobody would record what they
       start (its instance stays PENDING and is relaunched), and its /proc/<pid>/fd may be
       another process's by now. */
    if (getppid() != environment) quit(0);
    len += (size_t)n;
    for (;;) {
      char *nl = memchr(buf, '\n', len);
      if (nl == NULL) break;
      char *rest;
      unsigned long body = strtoul(buf, &rest, 10);
      if (rest != nl || body > MAX_REQUEST) bad_request("bad length");
      size_t head = (size_t)(nl - buf) + 1;
      if (len < head + body) break;
      start(buf, head + body, buf + head, buf + head + body);
      memmove(buf, buf + head + body, len - head - body);
      len -= head + body;
    }
  }
}

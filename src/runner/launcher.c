/*
 * runtara-launcher: creates the long-lived processes the spawner is asked for (workflows,
 * `runc run`). Forking this small process instead of Node (whose fork and exec teardown cost
 * milliseconds of CPU per start) also lets each child join its cgroups, take its RLIMIT_FSIZE,
 * session, stdio, working directory and user before it execs: the workflow's first
 * instruction already runs inside its limits, with exactly the environment it was given.
 * The child also creates its cgroup (directories, limits): those calls can wait behind other
 * cgroup changes host-wide, which must hold up neither this process nor the environment.
 *
 * Started by spawner-process.ts with the environment's pid as its argument. Requests on
 * stdin, each "<length>\n" and then <length> bytes of NUL-terminated fields:
 *   id, file, cwd, uid, gid, detached (0/1), stdout fd, stderr fd, file size limit,
 *   count and cgroup directories (one per hierarchy), count and limit files with values
 *   (file, value, file, value...), count and arguments (after argv[0]),
 *   count and environment entries, or "-" for this process's own environment.
 * An empty cwd, uid, gid, fd or limit means none. The fds are the environment's, reopened
 * through /proc/<pid>/fd. Answers on stdout, one line each:
 *   "P <id> <pid> <start time>"  the child exec'd (start time: /proc/<pid>/stat field 22)
 *   "F <id> <errno> <step>"      it could not; nothing runs
 *   "X <id> <code> <signal>"     a started child exited ("-" for what does not apply)
 * It exits when stdin closes: what it answered for lives on (detached, adopted later by pid),
 * what it did not is killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Far above any real request (arguments and environment are bounded by the kernel's exec limits). */
#define MAX_REQUEST (64u << 20)

struct request {
  const char *id, *file, *cwd;
  long uid, gid, out_fd, err_fd, file_size; /* -1: none */
  int detached;
  unsigned ndirs, nlimits;
  char **dirs;
  char **limits; /* file, value, file, value... */
  char **argv;
  char **envp; /* NULL: our own */
};

struct child {
  char id[24];
  pid_t pid;
  int status_fd; /* read end of the close-on-exec pipe, -1 once settled */
  int failed;
};

static pid_t environment;
static struct child *children;
static size_t nchildren, capchildren;

static void *grow(void *p, size_t n) {
  void *q = realloc(p, n);
  if (q == NULL) _exit(70);
  return q;
}

/* The spawner reads every line; if it is gone, so is our reason to run. */
static void say(const char *fmt, ...) {
  char line[160];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  for (int off = 0; off < n;) {
    ssize_t w = write(1, line + off, (size_t)(n - off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) _exit(0);
    off += (int)w;
  }
}

/* Field 22 of /proc/<pid>/stat: clock ticks since boot, what adoption compares a pid with. */
static unsigned long long start_time(pid_t pid) {
  char path[40], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
  if (p == NULL) return 0;
  p += 2; /* field 3 */
  for (int field = 3; field < 22 && p != NULL; field++) {
    p = strchr(p, ' ');
    if (p != NULL) p++;
  }
  return p == NULL ? 0 : strtoull(p, NULL, 10);
}

/* Only the spawner writes requests, so a malformed one is a bug there: stop rather than guess. */
static _Noreturn void bad_request(const char *why) {
  fprintf(stderr, "runtara-launcher: bad request: %s\n", why);
  _exit(65);
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

enum step { STEP_FORK, STEP_SETSID, STEP_MKCGROUP, STEP_CGROUP, STEP_RLIMIT, STEP_STDIO, STEP_CWD, STEP_USER, STEP_EXEC };
static const char *const STEP_NAMES[] = {"fork", "setsid", "mkcgroup", "cgroup", "rlimit", "stdio", "cwd", "user", "exec"};

struct failure {
  int err, step;
};

static _Noreturn void child_failed(int status_fd, enum step step) {
  struct failure f = {errno, step};
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

/* In the child: everything that may fail happens before exec, and is reported through status_fd. */
static _Noreturn void become(const struct request *r, int status_fd) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGPIPE, SIG_DFL);
  if (r->detached && setsid() < 0) child_failed(status_fd, STEP_SETSID);

  for (unsigned i = 0; i < r->ndirs; i++)
    if (mkdir(r->dirs[i], 0755) < 0 && errno != EEXIST) child_failed(status_fd, STEP_MKCGROUP);
  for (unsigned i = 0; i + 1 < r->nlimits; i += 2)
    if (write_file(r->limits[i], r->limits[i + 1]) < 0) child_failed(status_fd, STEP_MKCGROUP);
  char pid[24], procs[4096];
  snprintf(pid, sizeof pid, "%d", (int)getpid());
  for (unsigned i = 0; i < r->ndirs; i++) {
    errno = ENAMETOOLONG;
    if (snprintf(procs, sizeof procs, "%s/cgroup.procs", r->dirs[i]) >= (int)sizeof procs || write_file(procs, pid) < 0) child_failed(status_fd, STEP_CGROUP);
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

  if (*r->cwd != 0 && chdir(r->cwd) < 0) child_failed(status_fd, STEP_CWD);
  if (r->uid >= 0 || r->gid >= 0) {
    (void)!setgroups(0, NULL); /* fails unprivileged, where there are no groups to drop */
    if (r->gid >= 0 && setgid((gid_t)r->gid) < 0) child_failed(status_fd, STEP_USER);
    if (r->uid >= 0 && setuid((uid_t)r->uid) < 0) child_failed(status_fd, STEP_USER);
  }
  char **envp = r->envp != NULL ? r->envp : environ;
  if (strchr(r->file, '/') != NULL) execve(r->file, r->argv, envp);
  else execvpe(r->file, r->argv, envp);
  child_failed(status_fd, STEP_EXEC);
}

static void start(char *body, char *end) {
  char *p = body;
  struct request r;
  r.id = field(&p, end);
  r.file = field(&p, end);
  r.cwd = field(&p, end);
  r.uid = optional(field(&p, end));
  r.gid = optional(field(&p, end));
  r.detached = strcmp(field(&p, end), "1") == 0;
  r.out_fd = optional(field(&p, end));
  r.err_fd = optional(field(&p, end));
  r.file_size = optional(field(&p, end));
  r.ndirs = count(field(&p, end), &p, end);
  r.dirs = strings(&p, end, r.ndirs, NULL);
  r.nlimits = count(field(&p, end), &p, end);
  if (r.nlimits % 2 != 0) bad_request("odd limit list");
  r.limits = strings(&p, end, r.nlimits, NULL);
  unsigned nargs = count(field(&p, end), &p, end);
  r.argv = strings(&p, end, nargs, r.file);
  const char *env = field(&p, end);
  r.envp = strcmp(env, "-") == 0 ? NULL : strings(&p, end, count(env, &p, end), NULL);
  if (p != end || strlen(r.id) >= sizeof children->id) bad_request("trailing bytes or long id");

  int pipe_fds[2];
  pid_t pid = -1;
  int fork_errno = 0;
  if (pipe2(pipe_fds, O_CLOEXEC) == 0) {
    pid = fork();
    if (pid == 0) become(&r, pipe_fds[1]);
    fork_errno = errno;
    close(pipe_fds[1]);
    if (pid < 0) close(pipe_fds[0]);
  } else {
    fork_errno = errno;
  }
  free(r.dirs);
  free(r.limits);
  free(r.argv);
  free(r.envp);
  if (pid < 0) {
    say("F %s %d %s\n", r.id, fork_errno, STEP_NAMES[STEP_FORK]);
    return;
  }

  if (nchildren == capchildren) children = grow(children, (capchildren = capchildren * 2 + 16) * sizeof *children);
  struct child *c = &children[nchildren++];
  snprintf(c->id, sizeof c->id, "%s", r.id);
  c->pid = pid;
  c->status_fd = pipe_fds[0];
  c->failed = 0;
}

/* The pipe says whether the child exec'd: closed empty by the exec, or a failure written before _exit. */
static void settle(struct child *c) {
  struct failure f;
  ssize_t n;
  do n = read(c->status_fd, &f, sizeof f);
  while (n < 0 && errno == EINTR);
  close(c->status_fd);
  c->status_fd = -1;
  if (n == (ssize_t)sizeof f) {
    c->failed = 1;
    say("F %s %d %s\n", c->id, f.err, STEP_NAMES[f.step]);
  } else {
    /* Not reaped before we say so: /proc/<pid> still names this child. */
    say("P %s %d %llu\n", c->id, (int)c->pid, start_time(c->pid));
  }
}

static void reap(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (size_t i = 0; i < nchildren; i++) {
      struct child *c = &children[i];
      if (c->pid != pid) continue;
      if (c->status_fd >= 0) settle(c); /* it exited before we read its pipe: the answer is there */
      if (!c->failed) {
        if (WIFSIGNALED(status)) {
          const char *name = sigabbrev_np(WTERMSIG(status));
          if (name != NULL) say("X %s - SIG%s\n", c->id, name);
          else say("X %s - SIG%d\n", c->id, WTERMSIG(status));
        } else {
          say("X %s %d -\n", c->id, WEXITSTATUS(status));
        }
      }
      children[i] = children[--nchildren];
      break;
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 2 || (environment = (pid_t)atoi(argv[1])) <= 1) {
    fprintf(stderr, "usage: runtara-launcher <pid of the environment>\n");
    return 64;
  }
  /* A child's stdio is dup2'd onto 0-2: they must be ours, not a descriptor we opened for it. */
  for (int fd = 0; fd <= 2; fd++)
    if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd) return 71;
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
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
    for (size_t i = 0; i < nchildren; i++)
      if (children[i].status_fd >= 0) fds[nfds++] = (struct pollfd){.fd = children[i].status_fd, .events = POLLIN};
    if (poll(fds, nfds, -1) < 0) {
      if (errno == EINTR) continue;
      return 71;
    }
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
      while (read(sfd, &info, sizeof info) > 0) {
      }
      reap();
    }
    if (fds[0].revents == 0) continue;
    if (cap - len < 65536) buf = grow(buf, cap = cap * 2 + 65536);
    ssize_t n = read(0, buf + len, cap - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      /* The spawner is gone. A child not yet answered for is recorded nowhere: it must not run. */
      for (size_t i = 0; i < nchildren; i++)
        if (children[i].status_fd >= 0) kill(children[i].pid, SIGKILL);
      return 0;
    }
    len += (size_t)n;
    for (;;) {
      char *nl = memchr(buf, '\n', len);
      if (nl == NULL) break;
      *nl = 0;
      char *rest;
      unsigned long body = strtoul(buf, &rest, 10);
      if (rest != nl || body > MAX_REQUEST) bad_request("bad length");
      size_t head = (size_t)(nl - buf) + 1;
      if (len < head + body) {
        *nl = '\n';
        break;
      }
      start(buf + head, buf + head + body);
      memmove(buf, buf + head + body, len - head - body);
      len -= head + body;
    }
  }
}

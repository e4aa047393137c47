import type { IdMapping } from "./idmap.js";
import { CORE_SOCKET_DIR_IN_CONTAINER, type ResourceLimits } from "./types.js";

/** Instance ids as the API accepts them; they become container ids and path components. */
const INSTANCE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export function isValidInstanceId(id: string): boolean {
  return INSTANCE_ID.test(id) && id !== "." && id !== "..";
}

/**
 * Container id of an instance: "runtara-" + the whole instance id, so ids sharing a prefix
 * never collide. runc accepts `[A-Za-z0-9_+,.-]` only; the one instance-id character outside
 * that set, ':', becomes '+', which instance ids cannot contain — a bijection that keeps the
 * length (at most 136 characters, well under the 255 of a state or cgroup directory name).
 */
export function containerIdFor(instanceId: string): string {
  if (!isValidInstanceId(instanceId)) throw new RangeError(`not a valid instance id: ${JSON.stringify(instanceId)}`);
  return `runtara-${instanceId.replaceAll(":", "+")}`;
}

/** Inverse of containerIdFor; undefined for ids that are not ours. */
export function instanceIdOfContainer(containerId: string): string | undefined {
  if (!containerId.startsWith("runtara-")) return undefined;
  const id = containerId.slice("runtara-".length).replaceAll("+", ":");
  return isValidInstanceId(id) ? id : undefined;
}

export interface OciConfigInput {
  /** Absolute path of the root filesystem (mounted read-only). */
  rootfs: string;
  args: readonly string[];
  env: Readonly<Record<string, string>>;
  /** Working directory. @default "/" */
  cwd?: string;
  /** User inside the user namespace. @default root (0:0), an unprivileged host uid */
  user?: { uid: number; gid: number };
  hostname: string;
  /** Host directory bind-mounted read-write at /data; omitted for the runtime probe. */
  dataDir?: string;
  /** cgroup path of the container, absolute within each hierarchy. */
  cgroupsPath: string;
  limits: Readonly<ResourceLimits>;
  /**
   * `host`: the host's network namespace. `new`: a fresh one the runtime creates (loopback
   * only). A path: join that namespace (created and connected by us, see ./netns.ts).
   */
  network: "host" | "new" | { path: string };
  /** The container's user namespace; container root is host `uidBase`. */
  idMapping: IdMapping;
  /** Host directory mounted read-only at /run/runtara (core's Unix socket). */
  coreSocketDir?: string;
  /** Install the syscall deny-list (see `seccompProfile`). */
  seccomp: boolean;
  /**
   * Host path of a static init (tini), mounted read-only at {@link INIT_IN_CONTAINER} and run
   * as pid 1 with `args` as its child: it forwards signals to the workflow's process group
   * (a pid-1 workflow without handlers would ignore SIGTERM) and reaps orphaned children
   * (which would otherwise stay zombies and fill the pids limit). Omitted: `args` is pid 1.
   */
  init?: string;
}

/** Where the init binary appears in a container; its mount point is prepared in the rootfs. */
export const INIT_IN_CONTAINER = "/.runtara-init";

const CAPS_NONE = { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] };

/**
 * An OCI runtime spec (1.0.2) for one launch. The process runs as uid/gid 0 in its own user
 * namespace, which is an unprivileged host uid (`idMapping`), with every capability dropped,
 * noNewPrivileges, a read-only root holding only /binary, and a seccomp deny-list against
 * regaining privileges (new user namespaces) and kernel attack surface. Host-root-owned files
 * (the rootfs, the run directory's config.json and logs) appear owned by the overflow user
 * inside, so the container reads them only where "other" may. The only writable places are
 * /data (its run directory, owned by the mapped root), /tmp and /dev (tmpfs, charged to its
 * memory cgroup). There is no RLIMIT_NPROC: every container's root is the same host uid, so
 * it would count them all together; the pids cgroup limit bounds processes instead.
 */
export function buildOciConfig(c: OciConfigInput): object {
  const mounts: object[] = [
    { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
    { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    {
      destination: "/dev/shm",
      type: "tmpfs",
      source: "shm",
      options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    { destination: "/etc/hosts", type: "bind", source: "/etc/hosts", options: ["rbind", "ro", "nosuid", "nodev", "noexec"] },
    {
      destination: "/etc/resolv.conf",
      type: "bind",
      source: "/etc/resolv.conf",
      options: ["rbind", "ro", "nosuid", "nodev", "noexec"],
    },
    {
      destination: "/tmp",
      type: "tmpfs",
      source: "tmpfs",
      options: ["nosuid", "nodev", "mode=1777", `size=${c.limits.memoryBytes}`],
    },
  ];
  if (c.dataDir !== undefined) {
    mounts.push({ destination: "/data", type: "bind", source: c.dataDir, options: ["rbind", "rw", "nosuid", "nodev", "noexec"] });
  }
  if (c.init !== undefined) {
    mounts.push({ destination: INIT_IN_CONTAINER, type: "bind", source: c.init, options: ["bind", "ro", "nosuid", "nodev"] });
  }
  if (c.coreSocketDir !== undefined) {
    // The directory, not the socket file: a restarted environment recreates the socket (a new
    // inode), which a file bind mount would not follow.
    mounts.push({
      destination: CORE_SOCKET_DIR_IN_CONTAINER,
      type: "bind",
      source: c.coreSocketDir,
      options: ["rbind", "ro", "nosuid", "nodev", "noexec"],
    });
  }
  const namespaces: object[] = [{ type: "pid" }, { type: "mount" }, { type: "ipc" }, { type: "uts" }, { type: "cgroup" }, { type: "user" }];
  if (c.network === "new") namespaces.push({ type: "network" });
  else if (c.network !== "host") namespaces.push({ type: "network", path: c.network.path });
  const idMap = (hostID: number) => [{ containerID: 0, hostID, size: c.idMapping.size }];
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: c.user ?? { uid: 0, gid: 0 },
      // -g: signals go to the workflow's whole process group, as a Stop means all of it.
      args: c.init !== undefined ? [INIT_IN_CONTAINER, "-g", "--", ...c.args] : [...c.args],
      env: Object.entries(c.env)
        .map(([k, v]) => `${k}=${v}`)
        .sort(),
      cwd: c.cwd ?? "/",
      capabilities: CAPS_NONE,
      rlimits: [
        { type: "RLIMIT_NOFILE", hard: c.limits.nofile, soft: c.limits.nofile },
        { type: "RLIMIT_CORE", hard: 0, soft: 0 },
        { type: "RLIMIT_FSIZE", hard: c.limits.fileBytes, soft: c.limits.fileBytes },
      ],
      noNewPrivileges: true,
    },
    root: { path: c.rootfs, readonly: true },
    hostname: c.hostname,
    mounts,
    linux: {
      cgroupsPath: c.cgroupsPath,
      namespaces,
      uidMappings: idMap(c.idMapping.uidBase),
      gidMappings: idMap(c.idMapping.gidBase),
      resources: {
        devices: [{ allow: false, access: "rwm" }],
        memory: { limit: c.limits.memoryBytes },
        cpu: { quota: c.limits.cpuQuotaUs, period: c.limits.cpuPeriodUs },
        pids: { limit: c.limits.pidsLimit },
      },
      maskedPaths: [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
      ],
      readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
      ...(c.seccomp ? { seccomp: seccompProfile() } : {}),
    },
  };
}

/** Namespace flags a new process may not ask clone() for (CLONE_NEWNS ... CLONE_NEWNET). */
const CLONE_NAMESPACE_FLAGS = [0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000];

const DENIED_SYSCALLS = [
  // new namespaces: a user namespace hands back every capability inside it
  "unshare",
  "setns",
  // kernel keyring, eBPF, perf, userfaultfd, io_uring: large attack surface, no workflow use
  "add_key",
  "keyctl",
  "request_key",
  "bpf",
  "perf_event_open",
  "userfaultfd",
  "fanotify_init",
  // other processes' memory
  "ptrace",
  "process_vm_readv",
  "process_vm_writev",
  "kcmp",
  // mounts and the kernel itself (already refused without capabilities; defence in depth)
  "mount",
  "umount2",
  "pivot_root",
  "fsopen",
  "fsconfig",
  "fsmount",
  "fspick",
  "move_mount",
  "open_tree",
  "mount_setattr",
  "open_by_handle_at",
  "name_to_handle_at",
  "init_module",
  "finit_module",
  "delete_module",
  "kexec_load",
  "kexec_file_load",
  "reboot",
  "swapon",
  "swapoff",
  "acct",
  "quotactl",
  "syslog",
  "iopl",
  "ioperm",
  "settimeofday",
  "clock_settime",
  "clock_adjtime",
  "adjtimex",
];

/**
 * A deny-list (default allow) rather than an allow-list: workflows are arbitrary static
 * binaries, and an allow-list that misses one syscall breaks them in ways that are hard to
 * diagnose. clone3 answers ENOSYS (its flags sit in memory, which seccomp cannot inspect), so
 * libc falls back to clone, whose namespace flags are filtered. io_uring answers ENOSYS too, so
 * runtimes that probe for it fall back to ordinary syscalls.
 */
function seccompProfile(): object {
  const arch = process.arch === "arm64" ? ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"] : ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];
  return {
    defaultAction: "SCMP_ACT_ALLOW",
    architectures: arch,
    syscalls: [
      { names: DENIED_SYSCALLS, action: "SCMP_ACT_ERRNO", errnoRet: 1 /* EPERM */ },
      { names: ["clone3", "io_uring_setup", "io_uring_enter", "io_uring_register"], action: "SCMP_ACT_ERRNO", errnoRet: 38 /* ENOSYS */ },
      ...CLONE_NAMESPACE_FLAGS.map((flag) => ({
        names: ["clone"],
        action: "SCMP_ACT_ERRNO",
        errnoRet: 1,
        args: [{ index: 0, value: flag, valueTwo: flag, op: "SCMP_CMP_MASKED_EQ" }],
      })),
    ],
  };
}

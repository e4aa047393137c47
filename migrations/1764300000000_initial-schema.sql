-- Up Migration

CREATE TYPE runner_type AS ENUM ('oci', 'native', 'wasm');
CREATE TYPE instance_status AS ENUM ('pending', 'running', 'suspended', 'completed', 'failed', 'cancelled');
CREATE TYPE termination_reason AS ENUM (
  'completed', 'application_error', 'crashed', 'timeout', 'heartbeat_timeout',
  'cancelled', 'paused', 'sleeping', 'orphaned', 'launch_failed'
);
CREATE TYPE signal_type AS ENUM ('cancel', 'pause', 'resume');

-- Registered workflow executables. Files live in DATA_DIR/images/<image_id>/.
-- COLLATE "C" lets the (tenant_id, name) btree serve name-prefix search and keyset order.
CREATE TABLE images (
  image_id     uuid PRIMARY KEY,
  tenant_id    text COLLATE "C" NOT NULL,
  name         text COLLATE "C" NOT NULL,
  description  text NOT NULL DEFAULT '',
  runner_type  runner_type NOT NULL,
  metadata     jsonb,
  size_bytes   bigint NOT NULL CHECK (size_bytes >= 0),
  sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz,
  CONSTRAINT images_tenant_name_key UNIQUE (tenant_id, name)
);

-- One row per workflow execution. Every status change is a guarded UPDATE.
CREATE TABLE instances (
  instance_id        text COLLATE "C" PRIMARY KEY,
  tenant_id          text COLLATE "C" NOT NULL,
  -- SET NULL keeps history of deleted images; image_name is copied at start for the same reason.
  image_id           uuid REFERENCES images (image_id) ON DELETE SET NULL,
  image_name         text NOT NULL DEFAULT '',
  status             instance_status NOT NULL DEFAULT 'pending',
  termination_reason termination_reason,
  exit_code          integer,
  input              bytea,
  output             bytea,
  error              text,
  stderr             text,
  env                jsonb NOT NULL DEFAULT '{}'::jsonb,
  timeout_seconds    integer NOT NULL DEFAULT 300,
  checkpoint_id      text,
  sleep_until        timestamptz,
  created_at         timestamptz NOT NULL DEFAULT now(),
  started_at         timestamptz,
  finished_at        timestamptz,
  heartbeat_at       timestamptz,
  memory_peak_bytes  bigint,
  cpu_usage_usec     bigint,
  launch_attempts    integer NOT NULL DEFAULT 0
)
-- Heartbeat and checkpoint-id refreshes touch no indexed column, so with free space in the
-- page they are HOT updates (no index writes) on the hottest path.
WITH (fillfactor = 80);
CREATE INDEX instances_tenant_created ON instances (tenant_id, created_at DESC, instance_id DESC);
CREATE INDEX instances_tenant_status_created ON instances (tenant_id, status, created_at DESC, instance_id DESC);
CREATE INDEX instances_tenant_finished ON instances (tenant_id, finished_at DESC, instance_id DESC) WHERE finished_at IS NOT NULL;
CREATE INDEX instances_image ON instances (image_id, status);
-- Wake scheduler: only sleeping instances, ordered by wake time.
CREATE INDEX instances_sleeping ON instances (sleep_until) WHERE status = 'suspended' AND sleep_until IS NOT NULL;
-- Heartbeat monitor: only running instances. heartbeat_at is deliberately not indexed (see above).
CREATE INDEX instances_running ON instances (instance_id) WHERE status = 'running';
-- Retention cleanup of terminal instances.
CREATE INDEX instances_terminal_finished ON instances (finished_at) WHERE status IN ('completed', 'failed', 'cancelled');

-- Durable step results: first write wins (primary key), never updated.
CREATE TABLE checkpoints (
  instance_id   text COLLATE "C" NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
  checkpoint_id text COLLATE "C" NOT NULL,
  state         bytea NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (instance_id, checkpoint_id)
);
CREATE INDEX checkpoints_instance_created ON checkpoints (instance_id, created_at DESC);

-- At most one pending instance-wide signal; deleted when acknowledged.
CREATE TABLE pending_signals (
  instance_id text COLLATE "C" PRIMARY KEY REFERENCES instances (instance_id) ON DELETE CASCADE,
  signal_type signal_type NOT NULL,
  payload     bytea NOT NULL DEFAULT ''::bytea,
  created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Custom signals per wait point; kept until acknowledged (at-least-once delivery).
CREATE TABLE custom_signals (
  instance_id   text COLLATE "C" NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
  checkpoint_id text COLLATE "C" NOT NULL,
  payload       bytea NOT NULL DEFAULT ''::bytea,
  created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (instance_id, checkpoint_id)
);

-- Audit/debug log. Liveness is instances.heartbeat_at, not this table.
CREATE TABLE instance_events (
  id            bigserial PRIMARY KEY,
  instance_id   text COLLATE "C" NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
  event_type    text NOT NULL,
  subtype       text NOT NULL DEFAULT '',
  checkpoint_id text NOT NULL DEFAULT '',
  payload       bytea,
  created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX instance_events_instance_created ON instance_events (instance_id, created_at, id);

-- Processes this environment launched and still supervises. Identified by pid AND the
-- process start time so that a reused pid is never mistaken for the workflow.
CREATE TABLE running_processes (
  instance_id        text COLLATE "C" PRIMARY KEY REFERENCES instances (instance_id) ON DELETE CASCADE,
  runner             runner_type NOT NULL,
  container_id       text NOT NULL,
  pid                integer NOT NULL,
  process_start_time bigint NOT NULL,
  replica_id         text NOT NULL,
  host               text NOT NULL,
  run_dir            text NOT NULL,
  launched_at        timestamptz NOT NULL DEFAULT now(),
  deadline           timestamptz NOT NULL
);
CREATE INDEX running_processes_host ON running_processes (host, replica_id);

-- Server-wide secrets (instance token HMAC key), shared by every replica.
CREATE TABLE server_secrets (
  name       text PRIMARY KEY,
  secret     bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Cluster-wide cadence gates: a maintenance tick first wins its row (update-if-older).
CREATE TABLE maintenance_gates (
  name        text PRIMARY KEY,
  last_run_at timestamptz NOT NULL
);

-- Down Migration

DROP TABLE maintenance_gates, server_secrets, running_processes, instance_events,
  custom_signals, pending_signals, checkpoints, instances, images;
DROP TYPE signal_type, termination_reason, instance_status, runner_type;

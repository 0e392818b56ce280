-- edgebayes results database, schema version 1.
--
-- One SQLite file holds every run: provenance, the artifacts it used, one
-- row per job (a method x architecture x seed x device x transform chain
-- of a suite), and every measured facet. Reports and nightly comparisons
-- read only this file. The schema version is PRAGMA user_version; newer
-- versions are reached by the migrations in results/migrate.c, applied in
-- order inside one transaction. docs/results.md describes every column.
--
-- PRAGMA application_id marks the file as an edgebayes results database:
-- user_version alone cannot tell our file from another program's SQLite
-- file that also counts versions, and edgebayes must never write into a
-- file that is not its own.

-- Metric conventions: each stored metric names the convention it follows,
-- so numbers computed under different conventions are never compared.
CREATE TABLE conventions (
  id          TEXT PRIMARY KEY,          -- e.g. 'ece-15-equal-width-right-closed-v1'
  description TEXT NOT NULL
);

-- One invocation of `edgebayes run` (or `eval`), or one shard of it.
CREATE TABLE runs (
  id          INTEGER PRIMARY KEY,
  uuid        TEXT NOT NULL UNIQUE,      -- random version-4 UUID, 8-4-4-4-12 hex: shards merge without clashes
  label       TEXT,                      -- free text, e.g. 'nightly'
  suite       TEXT NOT NULL,             -- suite name ('quick', 'paper', a file name, 'eval')
  suite_sha256 TEXT NOT NULL,            -- digest of the suite text
  shard       TEXT NOT NULL DEFAULT '1/1',
  started_at  TEXT NOT NULL,             -- ISO 8601 UTC
  finished_at TEXT,                      -- NULL while running or if killed
  version     TEXT NOT NULL,             -- edgebayes version
  git_commit  TEXT NOT NULL,             -- build commit, '-dirty' if uncommitted changes
  compiler    TEXT NOT NULL,
  cflags      TEXT NOT NULL,
  cpu_model   TEXT NOT NULL,
  cores       INTEGER NOT NULL,
  host        TEXT NOT NULL,
  libraries   TEXT NOT NULL,             -- JSON object: library -> version
  environment TEXT NOT NULL DEFAULT '{}' -- JSON object: settings that affect timing (threads, injected slowdown)
);

-- Files a run used or produced, identified by content.
CREATE TABLE artifacts (
  id          INTEGER PRIMARY KEY,
  kind        TEXT NOT NULL CHECK (kind IN ('bundle', 'dataset')),
  sha256      TEXT NOT NULL UNIQUE,
  name        TEXT NOT NULL,             -- bundle file name, or 'fashion-mnist/test'
  bytes       INTEGER NOT NULL,
  meta        TEXT NOT NULL DEFAULT '{}' -- JSON: a bundle's metadata
);

CREATE TABLE run_artifacts (
  run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
  role        TEXT NOT NULL,             -- 'train', 'test', 'ood', 'bundle'
  PRIMARY KEY (run_id, artifact_id, role)
);

-- A finished unit of work. A job is written in one transaction together
-- with all its measurements, so a killed run loses only the job in
-- flight. `key` identifies the job's definition (suite entry, method,
-- settings, seed, architecture, device, chain, dataset digests; not the
-- code version), so a rerun skips finished jobs and two runs' jobs can be
-- matched for comparison.
CREATE TABLE jobs (
  id          INTEGER PRIMARY KEY,
  run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  key         TEXT NOT NULL,
  name        TEXT NOT NULL,             -- display name, e.g. 'ensemble/mlp/s1'
  method      TEXT NOT NULL,
  chain       TEXT NOT NULL DEFAULT '',  -- transform chain after the method, e.g. 'prune:0.9'
  arch        TEXT NOT NULL,
  seed        INTEGER NOT NULL,
  device      TEXT NOT NULL,
  draws       INTEGER NOT NULL,          -- S used for prediction
  settings    TEXT NOT NULL DEFAULT '{}',-- JSON: every setting
  bundle_id   INTEGER REFERENCES artifacts(id),
  status      TEXT NOT NULL CHECK (status IN ('done', 'failed')),
  error       TEXT,                      -- the failure's message
  seconds     REAL NOT NULL,             -- wall time of the job
  finished_at TEXT NOT NULL,
  UNIQUE (run_id, key)
);

-- Scalar results. facet: quality, calibration, ood, misclassification,
-- selective, adversarial, shift, latency, throughput, load, memory,
-- storage, fidelity, diagnostics, training. context qualifies the value
-- ('' when none): 'score=entropy', 'attack=pgd,eps=0.1',
-- 'corruption=rotation,severity=3', 'phase=predict'.
CREATE TABLE metrics (
  job_id      INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  facet       TEXT NOT NULL,
  name        TEXT NOT NULL,
  context     TEXT NOT NULL DEFAULT '',
  value       REAL,                      -- NULL when undefined (e.g. AUROC with one class)
  ci_low      REAL,                      -- confidence interval, NULL when not computed
  ci_high     REAL,
  ci_level    REAL,                      -- e.g. 0.95
  unit        TEXT NOT NULL DEFAULT '',  -- 's', 'bytes', 'images/s', '' for ratios
  higher_is_better INTEGER NOT NULL CHECK (higher_is_better IN (0, 1)),
  convention  TEXT REFERENCES conventions(id),
  PRIMARY KEY (job_id, facet, name, context)
);

-- Every raw latency sample, in query order.
CREATE TABLE latency_samples (
  job_id      INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  kind        TEXT NOT NULL,             -- 'single' (one input, steady state), 'first' (first prediction after load)
  seq         INTEGER NOT NULL,
  seconds     REAL NOT NULL,
  PRIMARY KEY (job_id, kind, seq)
);

-- Reliability diagram bins (confidence vs accuracy).
CREATE TABLE reliability_bins (
  job_id      INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  context     TEXT NOT NULL DEFAULT '',  -- 'binning=equal-width' or 'binning=equal-mass'
  bin         INTEGER NOT NULL,
  lo          REAL NOT NULL,
  hi          REAL NOT NULL,
  count       INTEGER NOT NULL,
  confidence  REAL,                      -- mean confidence in the bin (NULL if empty)
  accuracy    REAL,                      -- accuracy in the bin (NULL if empty)
  PRIMARY KEY (job_id, context, bin)
);

-- Curves as point lists: kind roc (x = FPR, y = TPR), pr (x = recall,
-- y = precision), eps (x = epsilon, y = the metric named in context),
-- shift (x = severity), selective (x = rejected fraction, y = accuracy).
CREATE TABLE curves (
  job_id      INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  kind        TEXT NOT NULL,
  context     TEXT NOT NULL DEFAULT '',
  seq         INTEGER NOT NULL,
  x           REAL NOT NULL,
  y           REAL NOT NULL,
  PRIMARY KEY (job_id, kind, context, seq)
);

-- Optional per-example predictive probabilities (C little-endian float32
-- values per row), for re-analysis without re-running.
CREATE TABLE predictions (
  job_id      INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  split       TEXT NOT NULL,             -- 'test', 'ood', 'shift:rotation:3', ...
  example     INTEGER NOT NULL,
  label       INTEGER,
  probs       BLOB NOT NULL,
  PRIMARY KEY (job_id, split, example)
);

CREATE INDEX jobs_by_key ON jobs(key);
CREATE INDEX metrics_by_name ON metrics(facet, name, context);

PRAGMA application_id = 1161974355; -- 0x45425253, 'EBRS'
PRAGMA user_version = 1;

package meta

// scanSchema is migration 7: security scanning.
//
//   - vuln_records holds the imported OSV records (the JSON as imported) and
//     vuln_keys the (ecosystem, package) pairs each names: matching a
//     package is one indexed lookup.
//   - vuln_sources records when each ecosystem was last imported.
//   - layer_index caches the indexer's result per layer digest: a layer
//     shared by many images is read once.
//   - manifest_scans is the state and report of each image manifest, by
//     digest (content-addressed: the same in every repository).
//   - manifest_packages is the index from package to manifests, which lets a
//     database import re-match only the manifests its changes name (by
//     name first: an advisory for a bare ecosystem, "Debian", names every
//     release's packages).
//   - manifest_vulns is the set of vulnerabilities last matched per manifest,
//     so that a re-match announces only what is new.
const scanSchema = `
CREATE TABLE vuln_records (
	id TEXT PRIMARY KEY,
	modified TEXT NOT NULL,
	withdrawn SMALLINT NOT NULL DEFAULT 0,
	data {{bytes}} NOT NULL,
	updated_at BIGINT NOT NULL
);
CREATE INDEX vuln_records_updated ON vuln_records(updated_at);
CREATE TABLE vuln_keys (
	ecosystem TEXT NOT NULL,
	name TEXT NOT NULL,
	record_id TEXT NOT NULL REFERENCES vuln_records(id) ON DELETE CASCADE,
	PRIMARY KEY (ecosystem, name, record_id)
);
CREATE INDEX vuln_keys_record ON vuln_keys(record_id);
CREATE TABLE vuln_sources (
	ecosystem TEXT PRIMARY KEY,
	records BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
);
CREATE TABLE layer_index (
	digest TEXT PRIMARY KEY,
	indexer_version INTEGER NOT NULL,
	status TEXT NOT NULL,
	result {{bytes}} NOT NULL,
	indexed_at BIGINT NOT NULL
);
CREATE TABLE manifest_scans (
	digest TEXT PRIMARY KEY,
	status TEXT NOT NULL,
	reason TEXT NOT NULL DEFAULT '',
	indexer_version INTEGER NOT NULL DEFAULT 0,
	report {{bytes}},
	updated_at BIGINT NOT NULL
);
CREATE TABLE manifest_packages (
	ecosystem TEXT NOT NULL,
	name TEXT NOT NULL,
	version TEXT NOT NULL,
	digest TEXT NOT NULL REFERENCES manifest_scans(digest) ON DELETE CASCADE,
	PRIMARY KEY (ecosystem, name, version, digest)
);
CREATE INDEX manifest_packages_digest ON manifest_packages(digest);
CREATE INDEX manifest_packages_name ON manifest_packages(name, ecosystem);
CREATE TABLE manifest_vulns (
	digest TEXT NOT NULL REFERENCES manifest_scans(digest) ON DELETE CASCADE,
	vuln_id TEXT NOT NULL,
	package TEXT NOT NULL,
	severity TEXT NOT NULL,
	PRIMARY KEY (digest, vuln_id, package)
);
CREATE INDEX manifest_vulns_vuln ON manifest_vulns(vuln_id);
`

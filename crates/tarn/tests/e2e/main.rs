//! End-to-end tests: each starts the real `tarn` binary on port 0 with a fresh `TARN_HOME` and
//! drives it through the CLI and HTTP, as users do. One test binary, so it links once.

mod api;
mod atomic;
mod audit;
mod authz;
mod backends;
mod backup;
mod batch;
mod chaos;
mod connections;
mod corpus;
mod crash;
mod datastores;
mod endpoints;
mod examples;
mod failover;
mod faults;
mod fuzz;
mod harness;
mod identity;
mod instances;
mod isolation;
mod job_crash;
mod job_envs;
mod jobs;
#[path = "../../../../tests/peers/kube.rs"]
mod kube;
mod kubernetes;
mod limits;
#[path = "../../../../tests/peers/oidc.rs"]
mod oidc_peer;
#[path = "../../../../tests/peers/peers.rs"]
mod peers;
mod pipelines;
mod quickstart;
#[path = "../../../../tests/peers/ray.rs"]
mod ray;
mod registries;
mod remote;
mod resources;
mod schedules;
mod secrets;
#[path = "../../../../tests/peers/slurm.rs"]
mod slurm;
mod spark;
#[path = "../../../../tests/peers/spark.rs"]
mod spark_peer;
mod sso;
mod store;
mod studio;
mod sweeps;
mod tracking;
mod validation;
mod workspaces;

//! Where a resource lives (`Scope`) and how a write treats the outside world
//! (`WriteOptions`): the vocabulary `resources`, `storage` and the services above them share,
//! kept here so that none of them imports another that imports it back.

use tarn_spec::Kind;
use tarn_store::ResourceKey;

/// Where a resource lives: its workspace, its kind and, for deployments, its endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    pub workspace: &'a str,
    pub kind: Kind,
    pub parent: Option<&'a str>,
}

/// How a create or update treats the outside world.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    /// Store a datastore without first checking that its storage answers (for storage that
    /// only compute nodes can reach); a warning says the check was skipped.
    pub skip_storage_check: bool,
    /// Register a model whose `runs:/` path names a run this workspace does not have, keeping
    /// the path as given: MLflow's registry does not check a version's source, and MLflow
    /// clients rely on that. `tarn model create` leaves it off and refuses such a path.
    pub keep_unknown_run_source: bool,
}

impl Scope<'_> {
    pub(crate) fn parent_key(&self) -> String {
        match (self.kind.parent(), self.parent) {
            (Some(pk), Some(p)) => format!("{}/{p}", pk.collection()),
            _ => String::new(),
        }
    }

    pub(crate) fn key(&self, workspace_id: &str, name: &str, version: &str) -> ResourceKey {
        ResourceKey {
            workspace_id: workspace_id.to_string(),
            kind: self.kind.collection().to_string(),
            parent: self.parent_key(),
            name: name.to_string(),
            version: version.to_string(),
        }
    }

    pub(crate) fn what(&self, name: &str, version: Option<&str>) -> String {
        let mut s = format!("{} {name:?}", self.kind.noun());
        if let Some(v) = version.filter(|v| !v.is_empty()) {
            s.push_str(&format!(" version {v:?}"));
        }
        if let Some(p) = self.parent {
            s.push_str(&format!(" of endpoint {p:?}"));
        }
        s.push_str(&format!(" in workspace {:?}", self.workspace));
        s
    }
}

//! The one parser for references to other resources: `azureml:name:version`,
//! `azureml:name@latest`, ARM-style ids, registry URIs, and compute names.

use crate::names::{self, NameRule};

/// A reference to a versioned asset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssetRef {
    /// `azureml:name:version` or an ARM id ending in `/<name>/versions/<version>`.
    Version { name: String, version: String },
    /// `azureml:name@latest` (or another label).
    Label { name: String, label: String },
    /// `azureml://registries/<registry>/<collection>/<name>/versions/<v>|labels/<l>`, or a
    /// curated `AzureML-…` environment: resolved by Tarn's alias table, not the workspace.
    Registry {
        registry: String,
        name: String,
        selector: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("{0:?} names no version: write `azureml:{1}:<version>` or `azureml:{1}@latest`")]
    NoVersion(String, String),
    #[error(
        "{0:?} is not a reference Tarn understands: use `azureml:<name>:<version>` or `azureml:<name>@latest`"
    )]
    Malformed(String),
    #[error("label {0:?} is not supported: only `latest` is")]
    UnknownLabel(String),
    #[error(transparent)]
    Name(#[from] names::NameError),
}

impl AssetRef {
    pub fn name(&self) -> &str {
        match self {
            AssetRef::Version { name, .. }
            | AssetRef::Label { name, .. }
            | AssetRef::Registry { name, .. } => name,
        }
    }
}

/// True when `text` is written as a reference rather than a local path.
pub fn looks_like_ref(text: &str) -> bool {
    text.starts_with("azureml:")
        || (!text.contains('/') && (text.contains('@') || text.contains(':')))
}

/// Parses an asset reference for an asset following `rule`.
pub fn parse_asset_ref(text: &str, rule: NameRule) -> Result<AssetRef, RefError> {
    if let Some(rest) = text.strip_prefix("azureml://registries/") {
        let parts: Vec<&str> = rest.split('/').collect();
        return match parts.as_slice() {
            [registry, _collection, name, "versions" | "labels", selector] => {
                Ok(AssetRef::Registry {
                    registry: registry.to_string(),
                    name: name.to_string(),
                    selector: selector.to_string(),
                })
            }
            _ => Err(RefError::Malformed(text.into())),
        };
    }
    let body = text.strip_prefix("azureml:").unwrap_or(text);
    if body.starts_with('/') {
        // ARM id: …/<collection>/<name>/versions/<version>
        let parts: Vec<&str> = body.trim_end_matches('/').split('/').collect();
        return match parts.as_slice() {
            [.., name, "versions", version] => versioned(name, version, rule),
            _ => Err(RefError::Malformed(text.into())),
        };
    }
    if let Some((name, label)) = body.split_once('@') {
        if name.starts_with("AzureML-") {
            return Ok(AssetRef::Registry {
                registry: "azureml".into(),
                name: name.to_string(),
                selector: label.to_string(),
            });
        }
        names::check(rule, name)?;
        if label != "latest" {
            return Err(RefError::UnknownLabel(label.into()));
        }
        return Ok(AssetRef::Label {
            name: name.into(),
            label: label.into(),
        });
    }
    match body.split_once(':') {
        Some((name, version)) if name.starts_with("AzureML-") => Ok(AssetRef::Registry {
            registry: "azureml".into(),
            name: name.into(),
            selector: version.into(),
        }),
        Some((name, version)) => versioned(name, version, rule),
        None if names::check(rule, body).is_ok() => {
            Err(RefError::NoVersion(text.into(), body.into()))
        }
        None => Err(RefError::Malformed(text.into())),
    }
}

fn versioned(name: &str, version: &str, rule: NameRule) -> Result<AssetRef, RefError> {
    names::check(rule, name)?;
    names::check(NameRule::Version, version)?;
    Ok(AssetRef::Version {
        name: name.into(),
        version: version.into(),
    })
}

/// What a job's or deployment's `compute` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComputeRef {
    Serverless,
    Local,
    Named(String),
}

/// Parses `azureml:cpu-cluster`, `cpu-cluster`, an ARM id ending in `/computes/<name>`,
/// `azureml:serverless` or `local`.
pub fn parse_compute_ref(text: &str) -> Result<ComputeRef, RefError> {
    let body = text.strip_prefix("azureml:").unwrap_or(text);
    let name = match body.rsplit_once("/computes/") {
        Some((_, name)) => name.trim_end_matches('/'),
        None => body,
    };
    match name {
        "serverless" => Ok(ComputeRef::Serverless),
        "local" => Ok(ComputeRef::Local),
        _ => {
            names::check(NameRule::Compute, name)?;
            Ok(ComputeRef::Named(name.into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_references_parse() {
        let v = |n: &str, v: &str| AssetRef::Version {
            name: n.into(),
            version: v.into(),
        };
        let cases: &[(&str, Result<AssetRef, RefError>)] = &[
            ("azureml:my-env:3", Ok(v("my-env", "3"))),
            ("my-env:3", Ok(v("my-env", "3"))),
            (
                "azureml:my-env@latest",
                Ok(AssetRef::Label {
                    name: "my-env".into(),
                    label: "latest".into(),
                }),
            ),
            (
                "azureml:/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w/environments/e/versions/2",
                Ok(v("e", "2")),
            ),
            (
                "azureml://registries/azureml/environments/sklearn-1.5/labels/latest",
                Ok(AssetRef::Registry {
                    registry: "azureml".into(),
                    name: "sklearn-1.5".into(),
                    selector: "latest".into(),
                }),
            ),
            (
                "azureml:AzureML-sklearn-1.5@latest",
                Ok(AssetRef::Registry {
                    registry: "azureml".into(),
                    name: "AzureML-sklearn-1.5".into(),
                    selector: "latest".into(),
                }),
            ),
            (
                "azureml:my-env",
                Err(RefError::NoVersion(
                    "azureml:my-env".into(),
                    "my-env".into(),
                )),
            ),
            (
                "azureml:my-env@stable",
                Err(RefError::UnknownLabel("stable".into())),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(&parse_asset_ref(text, NameRule::Asset), expected, "{text}");
        }
    }

    #[test]
    fn compute_references_parse() {
        assert_eq!(
            parse_compute_ref("azureml:cpu-cluster"),
            Ok(ComputeRef::Named("cpu-cluster".into()))
        );
        assert_eq!(
            parse_compute_ref("cpu-cluster"),
            Ok(ComputeRef::Named("cpu-cluster".into()))
        );
        assert_eq!(
            parse_compute_ref("azureml:serverless"),
            Ok(ComputeRef::Serverless)
        );
        assert_eq!(parse_compute_ref("local"), Ok(ComputeRef::Local));
        assert_eq!(
            parse_compute_ref("azureml:/subscriptions/x/workspaces/w/computes/gpu1"),
            Ok(ComputeRef::Named("gpu1".into()))
        );
        assert!(parse_compute_ref("azureml:../etc").is_err());
    }
}

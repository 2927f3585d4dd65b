//! What a Python environment needs, from an environment document: the Python version and the
//! pip requirements, taken from an inline conda file (its `python=` pin, its conda packages
//! and its `pip:` list), a curated environment, or nothing (an `image:`-only environment runs on
//! the host Python). The plan's hash names the cached environment: equal plans share one build.

use crate::curated;
use crate::refs::{self, AssetRef};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

/// A buildable environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvPlan {
    /// `3.11`; `None` takes the host's Python.
    pub python: Option<String>,
    /// pip requirement strings, in the order given.
    pub requirements: Vec<String>,
    /// Things the local build does differently from Azure's, for the build log.
    pub notes: Vec<String>,
}

/// Conda packages that are tooling, not libraries: they have no pip equivalent to install.
const CONDA_TOOLING: &[&str] = &["pip", "python", "setuptools", "wheel", "conda"];

impl EnvPlan {
    /// The content address of the environment: the same plan always hashes the same.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.python.as_deref().unwrap_or("host").as_bytes());
        for r in &self.requirements {
            h.update([0]);
            h.update(r.trim().as_bytes());
        }
        crate::digest::hex(&h.finalize()[..16])
    }
}

/// Plans an environment from a normalised environment spec, or a string reference to a curated
/// one. Registered references (`azureml:name:version`) must be resolved by the caller first.
pub fn plan(environment: &Json) -> Result<EnvPlan, String> {
    if let Some(text) = environment.as_str() {
        let reference = refs::parse_asset_ref(text, crate::names::NameRule::Asset)
            .map_err(|e| e.to_string())?;
        return match &reference {
            AssetRef::Registry { .. } => match curated::lookup(&reference) {
                Some(c) => Ok(EnvPlan {
                    python: Some(c.python.to_string()),
                    requirements: c.requirements.iter().map(|r| r.to_string()).collect(),
                    notes: c.note.iter().map(|n| format!("{}: {n}", c.name)).collect(),
                }),
                None => Err(format!(
                    "{text} is not a curated environment Tarn knows; register your own with a conda_file"
                )),
            },
            _ => Err(format!(
                "{text} must be resolved to its registered environment first"
            )),
        };
    }
    let mut out = EnvPlan {
        python: None,
        requirements: vec![],
        notes: vec![],
    };
    match environment.get("conda_file") {
        Some(conda) if conda.is_object() => conda_plan(conda, &mut out)?,
        Some(Json::String(path)) => {
            return Err(format!(
                "the conda file {path} must be read and inlined first"
            ));
        }
        _ => {}
    }
    Ok(out)
}

fn conda_plan(conda: &Json, out: &mut EnvPlan) -> Result<(), String> {
    for dep in conda
        .get("dependencies")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        match dep {
            Json::String(spec) => {
                let (name, version) = split_conda(spec);
                if name.eq_ignore_ascii_case("python") {
                    out.python = version.map(|v| v.trim_end_matches(".*").to_string());
                } else if !CONDA_TOOLING.contains(&name.to_ascii_lowercase().as_str()) {
                    // A conda package becomes its pip namesake, with the same pin.
                    out.requirements.push(match version {
                        Some(v) if v.contains('*') => format!("{name}=={v}"),
                        Some(v) if v.starts_with(['<', '>', '=', '!', '~']) => format!("{name}{v}"),
                        Some(v) => format!("{name}=={v}"),
                        None => name.to_string(),
                    });
                }
            }
            Json::Object(map) => {
                for item in map
                    .get("pip")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    let r = item.as_str().ok_or("pip dependencies must be strings")?;
                    out.requirements.push(r.to_string());
                }
            }
            _ => return Err("conda dependencies must be strings or a `pip:` list".into()),
        }
    }
    Ok(())
}

/// `numpy=1.26.4=py311h…` → (`numpy`, `1.26.4`); `python>=3.10` → (`python`, `>=3.10`).
fn split_conda(spec: &str) -> (&str, Option<&str>) {
    let spec = spec.split("::").last().unwrap_or(spec).trim();
    if let Some(i) = spec.find(['<', '>', '!', '~']) {
        return (spec[..i].trim(), Some(spec[i..].trim()));
    }
    match spec.split_once('=') {
        Some((name, rest)) => (
            name.trim(),
            Some(rest.split('=').next().unwrap_or(rest).trim()),
        ),
        None => (spec, None),
    }
}

/// An MLflow model's own environment files, as read from its folder (each may be missing).
#[derive(Default)]
pub struct MlflowModelFiles<'a> {
    pub requirements: Option<&'a str>,
    pub python_env: Option<&'a str>,
    pub conda: Option<&'a str>,
    pub mlmodel: Option<&'a str>,
}

/// The environment an MLflow model gets when it is deployed with none (Azure ML's no-code
/// deployment), from whichever of its own files say it: the pip requirements from
/// `requirements.txt`, else `conda.yaml`'s pip list; the Python version from `python_env.yaml`,
/// else `conda.yaml`'s `python=` pin, else the `python_version` in `MLmodel`. `mlflow` is served by `mlflow-skinny` (the same client
/// without the tracking server's dependencies), and pandas is added for pyfunc. Returns an
/// inline environment document.
pub fn mlflow_model_environment(files: &MlflowModelFiles) -> Json {
    let conda = files
        .conda
        .and_then(|text| crate::Node::from_yaml(text).ok())
        .map(|n| n.to_json());
    let conda_deps: Vec<Json> = conda
        .as_ref()
        .and_then(|c| c.get("dependencies"))
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let conda_pip: Vec<String> = conda_deps
        .iter()
        .filter_map(|d| d.get("pip").and_then(Json::as_array))
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    let requirements = match files.requirements {
        Some(text) => text.to_string(),
        None => conda_pip.join("\n"),
    };
    let mut pip: Vec<String> = vec![];
    for line in requirements.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('-') {
            continue;
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .unwrap_or(line.len());
        let (name, rest) = line.split_at(name_end);
        if name.eq_ignore_ascii_case("mlflow") {
            pip.push(format!("mlflow-skinny{rest}"));
        } else {
            pip.push(line.to_string());
        }
    }
    if !pip.iter().any(|r| r.starts_with("mlflow")) {
        pip.push("mlflow-skinny".into());
    }
    if !pip.iter().any(|r| r.starts_with("pandas")) {
        pip.push("pandas".into());
    }
    let from_python_env = files.python_env.and_then(|text| {
        text.lines().find_map(|l| {
            Some(
                l.trim()
                    .strip_prefix("python:")?
                    .trim()
                    .trim_matches('"')
                    .to_string(),
            )
        })
    });
    let from_conda = conda_deps.iter().filter_map(Json::as_str).find_map(|d| {
        let (name, version) = split_conda(d);
        (name.eq_ignore_ascii_case("python"))
            .then(|| version.map(|v| v.trim_start_matches(['=', '>', '<', '~']).to_string()))
            .flatten()
    });
    let from_mlmodel = files
        .mlmodel
        .and_then(|text| crate::Node::from_yaml(text).ok())
        .and_then(|n| {
            n.to_json()
                .pointer("/flavors/python_function/python_version")
                .and_then(Json::as_str)
                .map(str::to_string)
        });
    let python = from_python_env
        .or(from_conda)
        .or(from_mlmodel)
        .and_then(|v| {
            let mut parts = v.split('.');
            Some(format!("{}.{}", parts.next()?, parts.next()?))
        });
    let mut deps = vec![];
    if let Some(p) = &python {
        deps.push(Json::String(format!("python={p}")));
    }
    deps.push(serde_json::json!({ "pip": pip }));
    serde_json::json!({ "conda_file": { "dependencies": deps } })
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_mlflow_models_environment_comes_from_its_own_files() {
        let env = mlflow_model_environment(&MlflowModelFiles {
            requirements: Some("# comment\nmlflow==3.1.0\n-r other.txt\ncloudpickle==3.0.0\n"),
            python_env: Some("python: 3.11.4\nbuild_dependencies:\n  - pip\n"),
            conda: Some("dependencies:\n  - python=3.8.5\n"),
            mlmodel: None,
        });
        let planned = plan(&env).unwrap();
        assert_eq!(
            planned.python.as_deref(),
            Some("3.11"),
            "python_env.yaml wins"
        );
        assert_eq!(
            planned.requirements,
            ["mlflow-skinny==3.1.0", "cloudpickle==3.0.0", "pandas"]
        );
        // Only a conda.yaml: its Python pin and its pip list.
        let conda_only = plan(&mlflow_model_environment(&MlflowModelFiles {
            conda: Some(
                "channels: [conda-forge]\ndependencies:\n  - python=3.8.5\n  - pip<=20.2\n  - pip:\n    - mlflow\n    - scikit-learn==0.23.2\nname: mlflow-env\n",
            ),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(conda_only.python.as_deref(), Some("3.8"));
        assert_eq!(
            conda_only.requirements,
            ["mlflow-skinny", "scikit-learn==0.23.2", "pandas"]
        );
        let mlmodel_only = plan(&mlflow_model_environment(&MlflowModelFiles {
            mlmodel: Some("flavors:\n  python_function:\n    python_version: 3.9.7\n"),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(mlmodel_only.python.as_deref(), Some("3.9"));
        let bare = plan(&mlflow_model_environment(&MlflowModelFiles::default())).unwrap();
        assert_eq!(bare.python, None);
        assert_eq!(bare.requirements, ["mlflow-skinny", "pandas"]);
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn conda_files_become_python_and_pip_requirements() {
        let env = json!({"conda_file": {"name": "x", "channels": ["conda-forge"], "dependencies": [
            "python=3.11", "pip", "numpy=1.26.4=py311h64a7726_0", "pandas>=2.0", "conda-forge::scipy", "setuptools",
            {"pip": ["scikit-learn==1.5.2", "mlflow-skinny"]}
        ]}});
        let p = plan(&env).unwrap();
        assert_eq!(p.python.as_deref(), Some("3.11"));
        assert_eq!(
            p.requirements,
            [
                "numpy==1.26.4",
                "pandas>=2.0",
                "scipy",
                "scikit-learn==1.5.2",
                "mlflow-skinny"
            ]
        );
    }

    #[test]
    fn curated_and_image_only_environments_plan_too() {
        let curated = plan(&json!("azureml:AzureML-sklearn-1.5@latest")).unwrap();
        assert_eq!(curated.python.as_deref(), Some("3.11"));
        assert!(
            curated
                .requirements
                .iter()
                .any(|r| r.starts_with("scikit-learn"))
        );
        let image = plan(&json!({"image": "python:3.11"})).unwrap();
        assert_eq!((image.python, image.requirements.len()), (None, 0));
        assert!(
            plan(&json!("azureml:my-env:1")).is_err(),
            "registered references are resolved first"
        );
    }

    #[test]
    fn equal_plans_hash_equal_and_different_plans_do_not() {
        let a = plan(&json!({"conda_file": {"dependencies": ["python=3.11", {"pip": ["numpy"]}]}}))
            .unwrap();
        let b = plan(&json!({"image": "x", "conda_file": {"name": "other", "dependencies": ["python=3.11", {"pip": ["numpy"]}]}})).unwrap();
        let c = plan(&json!({"conda_file": {"dependencies": ["python=3.12", {"pip": ["numpy"]}]}}))
            .unwrap();
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
    }
}

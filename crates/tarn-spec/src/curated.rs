//! Azure ML's curated environments, as Tarn builds them locally: each name (in either syntax
//! users write — `azureml:AzureML-sklearn-1.5@latest` or
//! `azureml://registries/azureml/environments/sklearn-1.5/labels/latest`) maps to a Python
//! version and a set of pip requirements. GPU images map to their CPU builds: there is no
//! container runtime or CUDA here, and the jobs issue's environment builder says so in the log.

use crate::refs::AssetRef;

/// What a curated environment installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Curated {
    /// The name without the `AzureML-` prefix, e.g. `sklearn-1.5`.
    pub name: &'static str,
    pub python: &'static str,
    pub requirements: &'static [&'static str],
    /// Why the local build differs from Azure's image, if it does.
    pub note: Option<&'static str>,
}

const CPU_ONLY: &str = "built for CPU: this machine has no CUDA container runtime";

/// The table. Names follow the current examples in Azure/azureml-examples.
pub const CURATED: &[Curated] = &[
    Curated {
        name: "sklearn-1.5",
        python: "3.11",
        requirements: &[
            "scikit-learn~=1.5.0",
            "pandas",
            "numpy",
            "scipy",
            "joblib",
            "mlflow-skinny",
        ],
        note: None,
    },
    Curated {
        name: "sklearn-1.1",
        python: "3.10",
        requirements: &[
            "scikit-learn~=1.1.0",
            "pandas",
            "numpy<2",
            "scipy",
            "joblib",
            "mlflow-skinny",
        ],
        note: None,
    },
    Curated {
        name: "lightgbm-3.3",
        python: "3.10",
        requirements: &[
            "lightgbm~=3.3.0",
            "scikit-learn",
            "pandas",
            "numpy<2",
            "mlflow-skinny",
        ],
        note: None,
    },
    Curated {
        name: "tensorflow-2.16-cuda12",
        python: "3.11",
        requirements: &["tensorflow-cpu~=2.16.0", "pandas", "mlflow-skinny"],
        note: Some(CPU_ONLY),
    },
    Curated {
        name: "acpt-pytorch-2.8-cuda12.6",
        python: "3.11",
        requirements: &["torch~=2.8.0", "torchvision", "pandas", "mlflow-skinny"],
        note: Some(CPU_ONLY),
    },
    Curated {
        name: "pytorch-2.2-cuda12",
        python: "3.11",
        requirements: &[
            "torch~=2.2.0",
            "torchvision",
            "pandas",
            "numpy<2",
            "mlflow-skinny",
        ],
        note: Some(CPU_ONLY),
    },
];

/// Legacy suffixes of removed curated names (`AzureML-sklearn-1.0-ubuntu20.04-py38-cpu`).
const LEGACY_SUFFIXES: &[&str] = &[
    "-ubuntu20.04-py38-cpu",
    "-ubuntu22.04-py39-cpu",
    "-ubuntu22.04-py310-cpu",
    "-cpu",
];

/// The curated environment a registry reference names, if Tarn knows it.
pub fn lookup(reference: &AssetRef) -> Option<&'static Curated> {
    let AssetRef::Registry { registry, name, .. } = reference else {
        return None;
    };
    if registry != "azureml" {
        return None;
    }
    let bare = name.strip_prefix("AzureML-").unwrap_or(name);
    let bare = LEGACY_SUFFIXES
        .iter()
        .find_map(|s| bare.strip_suffix(s))
        .unwrap_or(bare);
    CURATED
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(bare))
        .or_else(|| {
            // An old minor version of a known family maps to the family's current entry.
            let family = bare.split('-').next().unwrap_or(bare);
            CURATED
                .iter()
                .find(|c| c.name.split('-').next() == Some(family))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::NameRule;
    use crate::refs::parse_asset_ref;

    #[test]
    fn both_syntaxes_and_legacy_names_resolve() {
        let cases: &[(&str, Option<&str>)] = &[
            ("azureml:AzureML-sklearn-1.5@latest", Some("sklearn-1.5")),
            (
                "azureml://registries/azureml/environments/sklearn-1.5/labels/latest",
                Some("sklearn-1.5"),
            ),
            (
                "azureml://registries/azureml/environments/lightgbm-3.3/versions/7",
                Some("lightgbm-3.3"),
            ),
            (
                "azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest",
                Some("sklearn-1.5"),
            ),
            (
                "azureml:AzureML-tensorflow-2.16-cuda12@latest",
                Some("tensorflow-2.16-cuda12"),
            ),
            (
                "azureml:AzureML-acpt-pytorch-2.8-cuda12.6@latest",
                Some("acpt-pytorch-2.8-cuda12.6"),
            ),
            (
                "azureml://registries/other/environments/sklearn-1.5/labels/latest",
                None,
            ),
            ("azureml:my-env:1", None),
        ];
        for (text, expected) in cases {
            let r = parse_asset_ref(text, NameRule::Asset).unwrap();
            assert_eq!(lookup(&r).map(|c| c.name), *expected, "{text}");
        }
    }

    #[test]
    fn gpu_images_say_they_are_built_for_cpu() {
        for c in CURATED {
            assert_eq!(c.note.is_some(), c.name.contains("cuda"), "{}", c.name);
            assert!(
                c.requirements.iter().any(|r| r.starts_with("mlflow")),
                "{} can log to MLflow",
                c.name
            );
        }
    }
}

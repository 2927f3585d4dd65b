//! The HTTP side of backups (`tarn_core::backup`): `POST /api/v1/backups` makes one, as an
//! administrator. Without `to` the backup comes back as a tar stream of its folder, for the
//! CLI to unpack where its user asked (`tarn backup create --to DIR`); with `to` (a datastore
//! URI) the server writes it there. A folder on the server's own machine is `tarn up
//! --backup-to`'s: the API writes no paths outside the server's home.

use crate::error::{ApiError, Code};
use crate::{ApiResult, AppState, Body, Caller};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tarn_core::backup::{Destination, Manifest};
use utoipa::ToSchema;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/backups", post(create))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// Where to write it: `azureml://datastores/<ds>/paths/<folder>` (with `workspace`, or the
    /// URI's long form). Absent: the response is the backup, as a tar stream.
    pub to: Option<String>,
    pub workspace: Option<String>,
    /// Put the vault key in the backup, wrapped with this passphrase (Argon2id and
    /// XChaCha20-Poly1305; at least 12 characters). Absent: the backup has no vault key, and
    /// a restore needs the key file.
    pub passphrase: Option<String>,
}

/// A backup written where asked.
#[derive(Serialize, ToSchema)]
pub struct BackupMade {
    pub name: String,
    pub location: String,
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
}

/// Makes a backup of the whole metadata store (administrators only): a datastore folder's, or
/// a tar stream (`application/x-tar`) of the backup's folder.
#[utoipa::path(post, path = "/api/v1/backups", request_body = BackupRequest, responses((status = 201, body = BackupMade), (status = 200, description = "the backup's folder as a tar stream", content_type = "application/x-tar")), security(("bearer" = [])))]
pub(crate) async fn create(
    State(t): State<AppState>,
    Caller(p): Caller,
    Body(body): Body<BackupRequest>,
) -> ApiResult<Response> {
    let passphrase = body.passphrase.as_deref();
    let Some(to) = body.to.as_deref() else {
        let made = t
            .backups
            .create_in_dir(&p, &t.backups.staging_dir(), passphrase)
            .await?;
        return stream_tar(made).await;
    };
    let to = Destination::parse(to, body.workspace.as_deref())?;
    if let Destination::Dir(_) = to {
        return Err(ApiError::new(
            Code::BadRequest,
            "the API writes backups to datastores (azureml://datastores/<ds>/paths/<folder>) or streams them back; a folder on the server's machine is `tarn up --backup-to`'s",
        ));
    }
    let made = t.backups.create(&p, &to, passphrase).await?;
    let view = BackupMade {
        name: made.manifest.name.clone(),
        location: to.to_string(),
        manifest: manifest_json(&made.manifest),
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

fn manifest_json(m: &Manifest) -> serde_json::Value {
    serde_json::to_value(m).expect("serializable")
}

/// Packs the backup's folder into a tar file beside it, then streams that file; both go when
/// the stream ends (or the client goes away).
async fn stream_tar(made: tarn_core::backup::Made) -> ApiResult<Response> {
    let dir = made.dir.clone();
    let tar_path = dir.with_extension("tar");
    let name = made.manifest.name.clone();
    let packed = {
        let (dir, tar_path, name) = (dir.clone(), tar_path.clone(), name.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let file = std::fs::File::create(&tar_path)?;
            let mut tar = tar::Builder::new(file);
            tar.mode(tar::HeaderMode::Complete);
            tar.append_dir_all(&name, &dir)?;
            tar.into_inner()?.sync_all()
        })
        .await
        .expect("the tar task does not panic")
    };
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = packed {
        let _ = std::fs::remove_file(&tar_path);
        return Err(tarn_core::Error::Io(e).into());
    }
    let file = tokio::fs::File::open(&tar_path)
        .await
        .map_err(tarn_core::Error::Io)?;
    let len = file.metadata().await.map_err(tarn_core::Error::Io)?.len();
    let cleanup = Cleanup(tar_path);
    let stream = tarn_core::backup::file_stream(file);
    let body = futures::StreamExt::map(stream, move |chunk| {
        let _held = &cleanup;
        chunk
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-tar")
        .header(header::CONTENT_LENGTH, len)
        .header("x-tarn-backup", name)
        .body(axum::body::Body::from_stream(body))
        .map_err(|e| ApiError::new(Code::InternalError, e.to_string()))
}

/// Removes the streamed tar file when the response is done with it.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

//! `tarn quickstart`: the whole loop of the product in one command, for a newcomer. On the
//! embedded defaults it starts a server (unless one answers), then makes a workspace, uploads
//! the iris dataset shipped in this binary, trains a scikit-learn model as a command job on a
//! cluster (tracked with MLflow), registers it, deploys it to an online endpoint with two
//! deployments and a 90/10 split, invokes it, batch-scores files with a batch endpoint, and
//! prints what it made and where to look. Every file it submits is written under
//! `TARN_HOME/quickstart/`, so each step can be read and rerun with the ordinary commands.

use crate::client::{ApiError, Client, enc};
use anyhow::{Context, bail};
use serde_json::{Value as Json, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tarn_spec::Kind;

const IRIS: &str = include_str!("iris.csv");
const TRAIN: &str = include_str!("train.py");

#[derive(clap::Args)]
pub struct QuickstartCmd {
    /// The workspace to build it in (made if missing).
    #[arg(short, long, default_value = "quickstart")]
    pub workspace: String,
    /// Stop the server quickstart started once it is done, instead of serving until Ctrl-C.
    #[arg(long)]
    pub stop: bool,
}

/// Prints numbered steps with their time, as the loop goes.
struct Progress {
    started: Instant,
    step: Instant,
    n: usize,
}

const STEPS: usize = 6;

impl Progress {
    fn begin(&mut self, what: &str) {
        self.n += 1;
        self.step = Instant::now();
        eprintln!("[{}/{STEPS}] {what}", self.n);
    }
    fn note(&self, what: &str) {
        eprintln!("      {what}");
    }
    fn done(&self, what: &str) {
        eprintln!(
            "      {what} ({:.1} s; {:.0} s in all)",
            self.step.elapsed().as_secs_f64(),
            self.started.elapsed().as_secs_f64()
        );
    }
}

pub async fn run(cmd: QuickstartCmd, g: &crate::Global) -> anyhow::Result<ExitCode> {
    let home = g.home();
    let (c, mut server) = connect_or_start(g, &home).await?;
    let outcome = the_loop(&c, &cmd.workspace, &home).await;
    if let Err(e) = &outcome {
        eprintln!("quickstart stopped: {e:#}");
    }
    if let Some(child) = server.as_mut() {
        if !cmd.stop && outcome.is_ok() {
            eprintln!("Tarn keeps running so you can try the above; Ctrl-C stops it.");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = child.wait() => {}
            }
        }
        stop_server(child).await;
    }
    Ok(if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The server the CLI would use, if it answers; else a `tarn up` on this home, started here.
async fn connect_or_start(
    g: &crate::Global,
    home: &Path,
) -> anyhow::Result<(Client, Option<tokio::process::Child>)> {
    if let Ok(c) = Client::new(g.server.as_deref(), g.token.as_deref(), home)
        && c.get("/workspaces").await.is_ok()
    {
        return Ok((c, None));
    }
    if g.server.is_some() {
        bail!("the server given with --server/TARN_SERVER does not answer");
    }
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)
        .with_context(|| format!("cannot create {}", home.display()))?;
    let log_path = home.join("quickstart-server.log");
    let log = std::fs::File::create(&log_path)?;
    // The usual port when it is free, else any.
    let port = if std::net::TcpListener::bind("127.0.0.1:8790").is_ok() {
        "8790"
    } else {
        "0"
    };
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["up", "--port", port, "--home"])
        .arg(home)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting `tarn up`")?;
    eprintln!(
        "starting Tarn on {} (its log: {})",
        home.display(),
        log_path.display()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("`tarn up` exited ({status}):\n{text}");
        }
        if let Ok(c) = Client::new(None, None, home)
            && c.get("/workspaces").await.is_ok()
        {
            return Ok((c, Some(child)));
        }
        if Instant::now() > deadline {
            bail!(
                "`tarn up` did not answer within 60 s; see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop_server(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiError>()
        .is_some_and(|a| a.code == "NotFound")
}

/// A YAML file read as `tarn <group> create -f` reads it, its local files uploaded.
async fn read_spec(c: &Client, kind: Kind, file: &Path, ws: &str) -> anyhow::Result<Json> {
    let doc = crate::commands::load(file, Some(kind), &[])?;
    let mut spec = crate::commands::with_secrets(&doc);
    let base = file.parent().unwrap_or(Path::new("."));
    crate::assets::upload_local_paths(c, kind, &mut spec, base, ws, true).await?;
    Ok(spec)
}

/// Creates a resource from a YAML file.
async fn create(
    c: &Client,
    kind: Kind,
    file: &Path,
    ws: &str,
    endpoint: Option<&str>,
) -> anyhow::Result<Json> {
    let spec = read_spec(c, kind, file, ws).await?;
    c.post(&crate::commands::collection_url(kind, ws, endpoint)?, &spec)
        .await
}

/// Creates a resource unless one of that name exists (which is left as it is).
async fn ensure(c: &Client, kind: Kind, file: &Path, ws: &str, name: &str) -> anyhow::Result<()> {
    let url = format!(
        "{}/{}",
        crate::commands::collection_url(kind, ws, None)?,
        enc(name)
    );
    match c.get(&url).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => create(c, kind, file, ws, None).await.map(|_| ()),
        Err(e) => Err(e),
    }
}

/// Creates a deployment, or updates the one of that name (a rerun rolls it to the new model).
async fn upsert(
    c: &Client,
    kind: Kind,
    file: &Path,
    ws: &str,
    endpoint: &str,
    name: &str,
) -> anyhow::Result<()> {
    let collection = crate::commands::collection_url(kind, ws, Some(endpoint))?;
    let url = format!("{collection}/{}", enc(name));
    match c.get(&url).await {
        Ok(_) => {
            let spec = read_spec(c, kind, file, ws).await?;
            c.put(&url, &spec).await.map(|_| ())
        }
        Err(e) if is_not_found(&e) => create(c, kind, file, ws, Some(endpoint)).await.map(|_| ()),
        Err(e) => Err(e),
    }
}

/// Waits for a job to end, printing its status as it changes; fails with its log tail.
async fn wait_job(c: &Client, p: &Progress, ws: &str, name: &str) -> anyhow::Result<Json> {
    let url = format!("/workspaces/{}/jobs/{}", enc(ws), enc(name));
    let mut last = String::new();
    loop {
        let job = c.get(&url).await?;
        let status = job["status"].as_str().unwrap_or("Queued").to_string();
        if status != last {
            p.note(&format!("job {name}: {status}"));
            last = status.clone();
        }
        match status.as_str() {
            "Completed" => return Ok(job),
            "Failed" | "Canceled" => {
                let log = c
                    .get_raw(&format!("{url}/log"))
                    .await?
                    .text()
                    .await
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "job {name} {}: {}\n{}",
                    status.to_lowercase(),
                    job["error"].as_str().unwrap_or_default(),
                    tail.join("\n")
                );
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

async fn the_loop(c: &Client, ws: &str, home: &Path) -> anyhow::Result<()> {
    let mut p = Progress {
        started: Instant::now(),
        step: Instant::now(),
        n: 0,
    };
    let dir = home.join("quickstart");
    let wsq = enc(ws);

    p.begin(&format!("workspace {ws:?}, its data and a compute cluster"));
    if crate::runner::find_uv(Some(home)).is_none() {
        p.note("installing uv, which builds Python environments (once)");
        crate::commands::setup(home)?;
    }
    match c.get(&format!("/workspaces/{wsq}")).await {
        Ok(_) => p.note(&format!("workspace {ws} exists; adding to it")),
        Err(e) if is_not_found(&e) => {
            c.post("/workspaces", &json!({ "name": ws })).await?;
        }
        Err(e) => return Err(e),
    }
    write(&dir, "data/iris.csv", IRIS)?;
    // The same flowers without their species, in three files, for batch scoring.
    let rows: Vec<&str> = IRIS.lines().collect();
    let header = rows[0].rsplit_once(',').map_or(rows[0], |(h, _)| h);
    for (i, chunk) in rows[1..].chunks(50).enumerate() {
        let mut text = format!("{header}\n");
        for row in chunk {
            text.push_str(row.rsplit_once(',').map_or(*row, |(r, _)| r));
            text.push('\n');
        }
        write(&dir, &format!("unlabeled/part-{}.csv", i + 1), &text)?;
    }
    let data = write(
        &dir,
        "data.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/data.schema.json\n\
         name: iris\ntype: uri_file\npath: ./data/iris.csv\n\
         description: Fisher's iris flowers, 150 rows with their species\n",
    )?;
    let iris = create(c, Kind::Data, &data, ws, None).await?;
    let unlabeled = write(
        &dir,
        "unlabeled.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/data.schema.json\n\
         name: iris-unlabeled\ntype: uri_folder\npath: ./unlabeled\n\
         description: the iris flowers without their species, in three CSV files\n",
    )?;
    create(c, Kind::Data, &unlabeled, ws, None).await?;
    let cluster = write(
        &dir,
        "cluster.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/amlCompute.schema.json\n\
         name: cpu-cluster\ntype: amlcompute\nmin_instances: 0\nmax_instances: 2\n\
         idle_time_before_scale_down: 120\n",
    )?;
    ensure(c, Kind::Compute, &cluster, ws, "cpu-cluster").await?;
    p.done(&format!(
        "data asset iris:{} uploaded; compute cluster cpu-cluster (0-2 nodes)",
        iris["version"].as_str().unwrap_or("?")
    ));

    p.begin("training a scikit-learn classifier as a command job on cpu-cluster");
    write(&dir, "src/train.py", TRAIN)?;
    write(
        &dir,
        "conda.yml",
        "name: sklearn\ndependencies:\n  - pip\n  - pip:\n    - scikit-learn\n    - pandas\n    - mlflow-skinny\n",
    )?;
    let job_file = write(
        &dir,
        "train-job.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json\n\
         type: command\ndisplay_name: train-iris\nexperiment_name: quickstart\n\
         code: ./src\n\
         command: python train.py --data ${{inputs.iris}} --C ${{inputs.C}}\n\
         inputs:\n  iris:\n    type: uri_file\n    path: azureml:iris@latest\n  C: 1.0\n\
         environment:\n  conda_file: ./conda.yml\n\
         compute: azureml:cpu-cluster\n",
    )?;
    let doc = crate::commands::load(&job_file, Some(Kind::Job), &[])?;
    let mut spec = doc.spec;
    crate::assets::upload_local_paths(c, Kind::Job, &mut spec, &dir, ws, true).await?;
    let job = c.post(&format!("/workspaces/{wsq}/jobs"), &spec).await?;
    let job_name = job["name"].as_str().unwrap_or_default().to_string();
    p.note("(the first run builds its Python environment; later runs reuse it)");
    let job = wait_job(c, &p, ws, &job_name).await?;
    let accuracy = job["metrics"]["accuracy"].as_f64().unwrap_or(f64::NAN);
    p.done(&format!(
        "job {job_name} completed; MLflow run {job_name}: accuracy {accuracy:.3}"
    ));

    p.begin("registering the trained model");
    let model = c
        .post(
            &format!("/workspaces/{wsq}/models"),
            &json!({
                "name": "iris-classifier",
                "type": "mlflow_model",
                "path": format!("azureml://jobs/{job_name}/outputs/artifacts/paths/outputs/model"),
                "description": "logistic regression on the iris flowers (tarn quickstart)",
                "tags": { "accuracy": format!("{accuracy:.3}") },
            }),
        )
        .await?;
    let version = model["version"].as_str().unwrap_or("1").to_string();
    p.done(&format!(
        "model iris-classifier:{version} (an MLflow model; MlflowClient sees it as a registered model version)"
    ));

    // Endpoint names are unique on a server; a rerun updates these.
    let endpoint = "quickstart-iris".to_string();
    p.begin(&format!(
        "online endpoint {endpoint}: deployments blue and green, traffic 90/10"
    ));
    let ep_file = write(
        &dir,
        "endpoint.yml",
        &format!(
            "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json\n\
             name: {endpoint}\nauth_mode: key\n"
        ),
    )?;
    ensure(c, Kind::OnlineEndpoint, &ep_file, ws, &endpoint).await?;
    for color in ["blue", "green"] {
        let file = write(
            &dir,
            &format!("{color}.yml"),
            &format!(
                "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\n\
                 name: {color}\nendpoint_name: {endpoint}\n\
                 model: azureml:iris-classifier:{version}\ninstance_count: 1\n"
            ),
        )?;
        upsert(c, Kind::OnlineDeployment, &file, ws, &endpoint, color).await?;
    }
    p.note("(an MLflow model needs no scoring script: its environment comes from the model)");
    for color in ["blue", "green"] {
        crate::endpoints::wait_ready(c, ws, &endpoint, color, true).await?;
        p.note(&format!("deployment {color}: ready"));
    }
    let ep_url = format!("/workspaces/{wsq}/online-endpoints/{}", enc(&endpoint));
    let mut ep = c.get(&ep_url).await?;
    let mut ep_spec = ep["spec"].clone();
    ep_spec["traffic"] = json!({ "blue": 90, "green": 10 });
    c.put(&ep_url, &ep_spec).await?;
    ep = c.get(&ep_url).await?;
    let scoring_uri = ep["scoring_uri"].as_str().unwrap_or_default().to_string();
    p.done(&format!("scoring URI {scoring_uri}"));

    p.begin("invoking the online endpoint");
    let request = json!({
        "input_data": {
            "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
            "index": [0, 1, 2],
            "data": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]],
        }
    });
    let request_file = write(
        &dir,
        "request.json",
        &serde_json::to_string_pretty(&request)?,
    )?;
    let creds = c.post(&format!("{ep_url}/credentials"), &json!({})).await?;
    let key = creds["primaryKey"].as_str().unwrap_or_default().to_string();
    let http = reqwest::Client::new();
    let (mut blue, mut green) = (0, 0);
    let mut answer = Json::Null;
    for _ in 0..100 {
        let resp = http
            .post(&scoring_uri)
            .bearer_auth(&key)
            .json(&request)
            .send()
            .await?;
        let status = resp.status();
        let who = resp
            .headers()
            .get("azureml-model-deployment")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp.text().await?;
        if !status.is_success() {
            bail!("the endpoint answered {status}: {body}");
        }
        answer = serde_json::from_str(&body).unwrap_or(Json::String(body));
        match who.as_str() {
            "blue" => blue += 1,
            "green" => green += 1,
            _ => {}
        }
    }
    p.note(&format!("three flowers are: {answer}"));
    p.done(&format!(
        "100 requests: blue answered {blue}, green {green}"
    ));

    let batch_endpoint = "quickstart-iris-batch".to_string();
    p.begin(&format!(
        "batch endpoint {batch_endpoint}: scoring the unlabeled files on cpu-cluster"
    ));
    let bep_file = write(
        &dir,
        "batch-endpoint.yml",
        &format!(
            "$schema: https://azuremlschemas.azureedge.net/latest/batchEndpoint.schema.json\n\
             name: {batch_endpoint}\n"
        ),
    )?;
    ensure(c, Kind::BatchEndpoint, &bep_file, ws, &batch_endpoint).await?;
    let bdep_file = write(
        &dir,
        "batch-deployment.yml",
        &format!(
            "$schema: https://azuremlschemas.azureedge.net/latest/modelBatchDeployment.schema.json\n\
             name: classify\nendpoint_name: {batch_endpoint}\ntype: model\n\
             model: azureml:iris-classifier:{version}\ncompute: azureml:cpu-cluster\n\
             settings:\n  mini_batch_size: 1\n  output_file_name: predictions.csv\n"
        ),
    )?;
    upsert(
        c,
        Kind::BatchDeployment,
        &bdep_file,
        ws,
        &batch_endpoint,
        "classify",
    )
    .await?;
    crate::endpoints::set_default(c, ws, &batch_endpoint, "classify", true).await?;
    let batch_job = c
        .post(
            &format!(
                "/workspaces/{wsq}/batch-endpoints/{}/invoke",
                enc(&batch_endpoint)
            ),
            &json!({ "input": "azureml:iris-unlabeled@latest", "input_type": "uri_folder" }),
        )
        .await?;
    let batch_name = batch_job["name"].as_str().unwrap_or_default().to_string();
    let batch_job = wait_job(c, &p, ws, &batch_name).await?;
    let predictions = read_predictions(c, ws, &batch_job).await?;
    let lines: Vec<&str> = predictions.lines().collect();
    for line in lines.iter().take(3) {
        p.note(&format!("predictions.csv: {line}"));
    }
    p.done(&format!(
        "job {batch_name}: {} flowers classified into output `score`",
        lines.len()
    ));

    let base = c.server().to_string();
    let elapsed = p.started.elapsed().as_secs_f64();
    println!();
    println!("Tarn quickstart finished in {elapsed:.0} s. In workspace {ws}:");
    println!("  Studio:             {base}/");
    println!("  API:                {base}/api/v1/workspaces/{wsq}");
    println!(
        "  MLflow tracking:    {base}/ws/{wsq}/mlflow   (experiment \"quickstart\", run {job_name})"
    );
    println!("  Scoring URI:        {scoring_uri}");
    println!("  Router metrics:     {base}/metrics");
    println!("The files it submitted are in {}. Try:", dir.display());
    println!("  tarn job show -n {job_name} -w {ws}");
    println!(
        "  tarn online-endpoint invoke -n {endpoint} -w {ws} --request-file {}",
        request_file.display()
    );
    println!("  tarn online-endpoint update -n {endpoint} -w {ws} --traffic \"blue=50 green=50\"");
    println!("  tarn job download -n {batch_name} -w {ws} --output-name score");
    println!(
        "  tarn job create -f {} -w {ws} --stream",
        job_file.display()
    );
    println!(
        "MLflow clients work with MLFLOW_TRACKING_URI={base}/ws/{wsq}/mlflow and a token from `tarn user create` in MLFLOW_TRACKING_TOKEN."
    );
    Ok(())
}

/// The `score` output's predictions file of a finished batch job.
async fn read_predictions(c: &Client, ws: &str, job: &Json) -> anyhow::Result<String> {
    let uri = job["outputs"]["score"]
        .as_str()
        .context("the batch job has no output `score`")?;
    let Ok(tarn_spec::uri::DataUri::Datastore {
        datastore, path, ..
    }) = tarn_spec::uri::parse(uri)
    else {
        bail!("the output `score` is at {uri}, not in a datastore");
    };
    let file = format!("{}/predictions.csv", path.as_str().trim_end_matches('/'));
    let resp = c
        .get_raw(&format!(
            "/workspaces/{}/datastores/{}/paths/{file}",
            enc(ws),
            enc(&datastore)
        ))
        .await?;
    Ok(resp.text().await?)
}

//! `tarn bench`: placeholder replaced below.
#[derive(clap::Args)]
pub struct BenchCmd {}
pub async fn run(_: BenchCmd) -> anyhow::Result<()> {
    Ok(())
}

//! `ahtsgd data check DIR`.

use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Find the official datasets in a folder and the folders below it, verify their
    /// checksums and load them
    Check {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: DataCommand) -> i32 {
    let DataCommand::Check { dir, json } = cmd;
    if !dir.is_dir() {
        eprintln!("error: {} is not a folder", dir.display());
        return 2;
    }
    let found = ahtsgd::data::inspect_tree(&dir);
    if found.is_empty() {
        eprintln!(
            "{}: no MNIST/Fashion-MNIST IDX files, CIFAR-10 batches or SVHN .mat files found\n  help: the official file names are expected (train-images-idx3-ubyte[.gz], cifar-10-binary.tar.gz or data_batch_1.bin.., train_32x32.mat)",
            dir.display()
        );
        return 1;
    }
    let mut failed = false;
    for f in &found {
        failed |= f.result.is_err();
        if json {
            let result = match &f.result {
                Ok((a, b)) => serde_json::json!({"train": a, "test": b}),
                Err(e) => serde_json::json!({"error": e}),
            };
            println!(
                "{}",
                serde_json::json!({"dataset": f.dataset, "file": f.file, "checksum": f.checksum, "result": result})
            );
        } else {
            let result = match &f.result {
                Ok((a, b)) => format!("loads: {a} train / {b} test"),
                Err(e) => format!("does not load: {e}"),
            };
            println!(
                "{:<28} {}\n    {}; {}",
                f.dataset, f.file, f.checksum, result
            );
        }
    }
    i32::from(failed)
}

//! Subcommand bodies: short — flags into a request, a [`Session`] call, the report shown.
//! Command modules share helpers through [`common`] (flags, environment),
//! [`workspace_file`] (`strata.toml`), [`image_input`] (the images `diff` and `verify` compare)
//! and this module ([`Globals`]); never each other.

mod bench;
mod build;
mod common;
mod diff;
mod export;
mod fsck;
mod gc;
mod image_input;
mod images;
mod inspect;
mod lock;
mod push;
mod rebase;
mod rmi;
mod sign;
mod verify;
mod verify_cause;
mod verify_dates;
mod workspace;
mod workspace_file;

use std::path::PathBuf;

use anyhow::Context as _;
use strata_cache::Store;
use strata_engine::session::{RegistryOptions, Session};

use crate::args::{Cli, Command};

/// The global flags every command sees: where the store is, how registries are reached.
pub(crate) struct Globals {
    pub store_dir: PathBuf,
    pub registry: RegistryOptions,
}

impl Globals {
    /// A session over the store (opened now) with the registry flags.
    pub fn session(&self) -> anyhow::Result<Session> {
        Ok(Session::new(
            open_store(&self.store_dir)?,
            self.registry.clone(),
        ))
    }

    /// The global registry flags as given, for a command that runs strata again in a child
    /// process (`verify`).
    pub fn registry_args(&self) -> Vec<std::ffi::OsString> {
        let mut v = Vec::new();
        for h in &self.registry.insecure {
            v.push("--insecure-registry".into());
            v.push(h.into());
        }
        if let Some(p) = &self.registry.registries_conf {
            v.push("--registries-conf".into());
            v.push(p.into());
        }
        v
    }
}

pub fn run(cli: Cli) -> anyhow::Result<i32> {
    // `bench` works in its own throwaway store.
    if let Command::Bench(a) = cli.command {
        return bench::run(a);
    }
    let g = Globals {
        store_dir: store_dir(cli.store)?,
        registry: RegistryOptions {
            insecure: cli.insecure_registries,
            registries_conf: cli.registries_conf,
        },
    };
    let store_dir = &g.store_dir;
    match cli.command {
        Command::Build(a) if a.sign_key.is_some() && (a.all || a.workspace.is_some()) => {
            anyhow::bail!("--sign-key with --all/--workspace is not supported yet\nhint: sign each image with `strata sign --key KEY NAME`")
        }
        Command::Verify(a) if a.build.sign_key.is_some() => {
            anyhow::bail!("`strata verify --sign-key` is not supported yet: verify builds in throwaway stores\nhint: sign the image you keep with `strata sign --key KEY NAME`")
        }
        Command::Build(a) if a.all || a.workspace.is_some() => workspace::run(&g, a),
        Command::Build(a) if a.shard.is_some() || !a.images.is_empty() => anyhow::bail!(
            "--shard and --image select images of a workspace\nhint: add --all (with strata.toml in the current directory) or --workspace FILE"
        ),
        Command::Build(a) => build::run(&g, a),
        Command::Bench(_) => unreachable!("handled above"),
        Command::Images => images::run(store_dir),
        Command::Rebase(a) => rebase::run(&g, a),
        Command::Fsck(a) => fsck::run(store_dir, a),
        Command::Gc(a) => gc::run(store_dir, a),
        Command::Rmi(a) => rmi::run(store_dir, a),
        Command::Inspect(a) => inspect::run(store_dir, a),
        Command::Export(a) => export::run(&g, a),
        Command::Push(a) => push::run(&g, a),
        Command::Diff(a) => diff::run(&g, a),
        Command::Verify(a) => verify::run(&g, a),
        Command::Lock(a) => lock::run(&g, a),
        Command::Sign(a) => sign::sign(&g, a),
        Command::VerifySignature(a) => sign::verify(&g, a),
    }
}

/// `--store`, else `$STRATA_STORE`, else `$XDG_DATA_HOME/strata`, else `~/.local/share/strata`.
fn store_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p);
    }
    if let Some(p) = std::env::var_os("STRATA_STORE").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p).join("strata"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("cannot find a store: set --store, $STRATA_STORE or $HOME")?;
    Ok(PathBuf::from(home).join(".local/share/strata"))
}

pub fn open_store(dir: &std::path::Path) -> anyhow::Result<Store> {
    Store::open_with(dir, std::sync::Arc::new(|msg: &str| eprintln!("{msg}")))
        .with_context(|| format!("opening the store at `{}`", dir.display()))
}

/// The stored tag for `NAME[:TAG]` (`:latest` when no tag is given), with its canonical name.
fn find_tag(store: &Store, name: &str) -> anyhow::Result<(String, strata_cache::TagRecord)> {
    let full = strata_engine::export::ImageName::parse(name)?.full();
    match store.index().get_tag(&full)? {
        Some(t) => Ok((full, t)),
        None => {
            anyhow::bail!("no image `{full}` in the store\nhint: `strata images` lists the tags")
        }
    }
}

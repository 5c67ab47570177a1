//! clap definitions, one struct per subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use strata_engine::attest::provenance::ProvenanceMode;
use strata_engine::attest::sbom::SbomFormat;
use strata_engine::layer::Compression;
use strata_engine::session::Output;

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Reproducible container image builds with a content-addressed cache"
)]
pub struct Cli {
    /// The content store [default: $STRATA_STORE, else $XDG_DATA_HOME/strata, else ~/.local/share/strata]
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Reach this registry HOST[:PORT] over plain HTTP (loopback registries always are) (repeatable)
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Mirrors, locations and blocked registries, as podman reads them [default:
    /// $CONTAINERS_REGISTRIES_CONF, else ~/.config/containers/registries.conf, else
    /// /etc/containers/registries.conf, with its registries.conf.d/ drop-ins]
    #[arg(long = "registries-conf", global = true, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build an image from a Dockerfile
    Build(BuildArgs),
    /// Swap the base layers of an image in the store without executing anything
    Rebase(RebaseArgs),
    /// Run cache scenarios on a Dockerfile (cold, no-op, one-file changes, a build-arg change)
    /// in a throwaway store and report what each costs
    Bench(BenchArgs),
    /// List the images tagged in the store
    Images,
    /// Check the store: re-hash every blob, check every record's references
    Fsck(FsckArgs),
    /// Remove least recently used cache entries (never what a tag references)
    Gc(GcArgs),
    /// Remove tags (their blobs are left for `gc`)
    Rmi(RmiArgs),
    /// Print a tagged image's manifest digest and config
    Inspect(InspectArgs),
    /// Write a tagged image out as an OCI layout or archive
    Export(ExportArgs),
    /// Pin every image reference of a Dockerfile (or workspace) to its digest in strata.lock;
    /// `--update [REF…]` re-resolves and prints what moved
    Lock(LockArgs),
    /// Push a tagged image to a registry; prints the pushed manifest digest
    Push(PushArgs),
    /// Compare two images; exit 0 if identical, 1 if different, 2 on error
    Diff(DiffArgs),
    /// Build N times from nothing under different conditions and compare the digests (a CI
    /// reproducibility gate); exit 0 reproducible, 1 not, 2 on error
    Verify(VerifyArgs),
    /// Sign an image with an EC P-256 key, as `cosign sign --key` does (docs/signing.md)
    Sign(SignArgs),
    /// Check an image's cosign signature with a public key; exit 0 verified, 1 not, 2 on error
    VerifySignature(VerifySignatureArgs),
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The private key: PEM, PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`, P-256
    #[arg(long, value_name = "KEY.pem")]
    pub key: PathBuf,
    /// The payload's docker-reference [default: the image's repository]
    #[arg(long, value_name = "REPOSITORY")]
    pub reference: Option<String>,
    /// NAME[:TAG] (a store tag) | oci:DIR[:TAG] | docker://REF | HOST/PATH[:TAG] (a registry)
    pub image: String,
}

#[derive(Args, Debug)]
pub struct VerifySignatureArgs {
    /// The public key: PEM `PUBLIC KEY` (SubjectPublicKeyInfo, as cosign.pub)
    #[arg(long, value_name = "PUB.pem")]
    pub key: PathBuf,
    /// NAME[:TAG] (a store tag) | oci:DIR[:TAG] | docker://REF | HOST/PATH[:TAG] (a registry)
    pub image: String,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Live display on a terminal, plain lines otherwise
    Auto,
    /// One line per step event
    Plain,
    /// One JSON object per line
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// The build context directory
    #[arg(default_value = ".")]
    pub context: PathBuf,
    /// Set by `strata verify` on the builds it runs: only then may `STRATA_VERIFY_VARIATION`
    /// (its variations of what RUN sees) be in the environment.
    #[arg(long, hide = true)]
    pub verify_child: bool,
    /// The Dockerfile [default: CONTEXT/Dockerfile, else CONTEXT/Containerfile]
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Write the image ID (the config digest, `sha256:…`, as docker) to FILE
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write build metadata as JSON to FILE, with the keys docker buildx writes
    /// (`containerimage.digest`, `containerimage.config.digest`, `containerimage.descriptor`,
    /// `image.name`)
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Name the image NAME[:TAG]; kept in the store, and used in outputs (repeatable)
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// Set a build argument: KEY=VALUE, or KEY to take it from the environment (repeatable)
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// Build this stage (and what it needs) instead of the last one
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use cached step results
    #[arg(long)]
    pub no_cache: bool,
    /// Neither trace RUN steps nor reuse them by read set: a RUN whose parent changed always
    /// runs again (docs/read-set.md)
    #[arg(long)]
    pub no_readset: bool,
    /// Target platforms, OS/ARCH[/VARIANT] comma-separated (linux/amd64,linux/arm64): several
    /// give one image index. A foreign platform's RUN steps run under QEMU (binfmt_misc)
    #[arg(long)]
    pub platform: Option<String>,
    /// Stages built at once, and threads for hashing and compression, 1 to 512 [default:
    /// number of CPUs]
    #[arg(short = 'j', long, value_parser = jobs_parser())]
    pub jobs: Option<usize>,
    /// How to show progress on stderr
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// type=oci,dest=DIR | type=oci-archive,dest=FILE | type=docker-archive,dest=FILE |
    /// type=registry,name=REF (repeatable)
    #[arg(short = 'o', long = "output", value_name = "SPEC", value_parser = output_parser)]
    pub outputs: Vec<Output>,
    /// Layer compression: gzip (default), zstd or none
    #[arg(long, default_value = "gzip", value_parser = compression_parser)]
    pub compression: Compression,
    /// Attach SLSA provenance: --provenance (mode=min), --provenance=mode=max (also every
    /// step's instruction and key), --provenance=false [default: false]. The image is then
    /// named through an image index that holds it and the attestation (docs/attestations.md)
    #[arg(
        long,
        value_name = "mode=min|max|false",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = provenance_parser
    )]
    pub provenance: Option<ProvenanceFlag>,
    /// Attach an SBOM of the image's packages (dpkg, apk, Python, npm): --sbom (SPDX 2.3),
    /// --sbom=format=cyclonedx (CycloneDX 1.5), --sbom=false [default: false]. Like
    /// --provenance, the image is then named through an image index (docs/sbom.md)
    #[arg(
        long,
        value_name = "format=spdx|cyclonedx|false",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = sbom_parser
    )]
    pub sbom: Option<SbomFlag>,
    /// Sign what the build tagged and wrote (each store tag, OCI layout and registry push)
    /// with this EC P-256 private key (PEM): a cosign signature, `sha256-<hex>.sig`
    /// (docs/signing.md)
    #[arg(long, value_name = "KEY.pem")]
    pub sign_key: Option<PathBuf>,
    /// Timestamp for every layer entry and config date [default: $SOURCE_DATE_EPOCH, else 0]
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<u64>,
    /// For every step that missed the cache, say why
    #[arg(long)]
    pub explain: bool,
    /// Build every image of the workspace (`strata.toml` in the current directory, or --workspace)
    #[arg(long)]
    pub all: bool,
    /// The workspace file listing many images (implies a workspace build)
    #[arg(long, value_name = "FILE")]
    pub workspace: Option<PathBuf>,
    /// Export this build's step cache: type=local,dest=DIR[,tag=T] (an OCI layout) or
    /// registry:REF
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// Use a step cache exported elsewhere: type=local,src=DIR[,tag=T] or registry:REF
    /// (repeatable; asked in order when the store misses)
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Fail if an image reference is not pinned in strata.lock, and never write it (for CI)
    #[arg(long)]
    pub locked: bool,
    /// In a workspace build, only these images (repeatable)
    #[arg(long = "image", value_name = "NAME")]
    pub images: Vec<String>,
    /// In a workspace build, only shard I of N (1-based): the images whose name hashes to it,
    /// so N machines with `--shard 1/N` … `--shard N/N` build every image exactly once
    #[arg(long, value_name = "I/N", value_parser = Shard::parse)]
    pub shard: Option<Shard>,
    /// In a workspace build, write a report: `--report json FILE` or `--report markdown FILE`
    #[arg(long, num_args = 2, value_names = ["FORMAT", "FILE"])]
    pub report: Vec<String>,
    /// The network of RUN steps without their own --network: none (hermetic) or host
    #[arg(long, value_name = "none|host", default_value = "none")]
    pub network: String,
    /// A secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR (repeatable)
    #[arg(long = "secret", value_name = "id=ID,src=FILE|env=VAR")]
    pub secrets: Vec<String>,
    /// An SSH agent for RUN --mount=type=ssh: default ($SSH_AUTH_SOCK) or ID=SOCKET (repeatable)
    #[arg(long = "ssh", value_name = "default|ID=SOCKET")]
    pub ssh: Vec<String>,
    /// Memory each RUN step may use (processes together, no swap on top): 512m, 2g, …
    /// Needs a writable memory cgroup (root, or a delegated cgroup v2)
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPU time each RUN step may use, in CPUs (0.5, 2, …). Needs a writable cpu cgroup
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,
}

/// `strata lock`: the flags that choose what is resolved (one Dockerfile, or a whole
/// workspace: the lock is shared by all its images, so there is no --image/--shard).
#[derive(Args, Debug)]
pub struct LockArgs {
    /// The build context directory
    #[arg(default_value = ".")]
    pub context: PathBuf,
    /// The Dockerfile [default: CONTEXT/Dockerfile, else CONTEXT/Containerfile]
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Set a build argument: KEY=VALUE, or KEY to take it from the environment (repeatable)
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// Resolve what this stage (and what it needs) uses instead of the last one
    #[arg(long)]
    pub target: Option<String>,
    /// Target platforms, OS/ARCH[/VARIANT] comma-separated: each resolves the references (and
    /// must find its entry in every index) [default: a workspace image's `platforms`, else the
    /// host's]
    #[arg(long)]
    pub platform: Option<String>,
    /// Lock every image of the workspace (`strata.toml` in the current directory, or --workspace)
    #[arg(long)]
    pub all: bool,
    /// The workspace file listing many images (implies the whole workspace)
    #[arg(long, value_name = "FILE")]
    pub workspace: Option<PathBuf>,
    /// Re-resolve these references (all when none is given) and print what moved; put the
    /// build context before it (`strata lock . --update debian:12`). ADD URLs and git
    /// sources (`REPO#REF`) are references too: they are fetched or resolved again
    #[arg(long, num_args = 0.., value_name = "REF")]
    pub update: Option<Vec<String>>,
}

#[derive(Args, Debug)]
pub struct FsckArgs {
    /// Delete corrupt blobs, drop records and tags pointing at missing blobs, remove stale
    /// temporary files; then check again
    #[arg(long)]
    pub repair: bool,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct GcPolicyArgs {
    /// Keep at most SIZE of blobs and snapshots (10GB, 500MiB, 0)
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// Keep what was used within D (7d, 12h, 30m)
    #[arg(long, value_name = "D")]
    pub keep_duration: Option<String>,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    #[command(flatten)]
    pub policy: GcPolicyArgs,
    /// Say what would be freed; delete nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Tags to remove, NAME[:TAG]
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A tag in the store, NAME[:TAG]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A tag in the store, NAME[:TAG]
    pub name: String,
    /// type=oci,dest=DIR | type=oci-archive,dest=FILE | type=docker-archive,dest=FILE (repeatable)
    #[arg(short = 'o', long = "output", value_name = "SPEC", required = true, value_parser = output_parser)]
    pub outputs: Vec<Output>,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// A tag in the store, NAME[:TAG]
    pub name: String,
    /// Where to push: [HOST[:PORT]/]PATH[:TAG] (default: NAME)
    pub reference: Option<String>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// First image: oci:DIR[:TAG] | oci-archive:FILE[:TAG] | docker-archive:FILE |
    /// store:NAME[:TAG] (or tag:NAME[:TAG]) | registry:REF | PATH
    #[arg(value_name = "A")]
    pub a: String,
    /// Second image, same forms
    #[arg(value_name = "B")]
    pub b: String,
    /// Print the report as JSON (schema: docs/diff.md)
    #[arg(long)]
    pub json: bool,
    /// Differences to ignore (comma-separated): mtime, uid, gid, owner, order, format, history,
    /// created, compression, or any other cause name
    #[arg(long, value_delimiter = ',', value_name = "CAUSES")]
    pub ignore: Vec<String>,
    /// Also run diffoscope (when installed) on the files whose content differs and write its
    /// HTML and text reports into DIR
    #[arg(long, value_name = "DIR")]
    pub diffoscope: Option<PathBuf>,
    /// The platform of registry:REF inputs that are multi-platform [default: the host's]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The build context directory (copied; the original is never modified)
    #[arg(default_value = ".")]
    pub context: PathBuf,
    /// The Dockerfile [default: CONTEXT/Dockerfile, else CONTEXT/Containerfile]
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Write the image ID (the config digest, `sha256:…`, as docker) to FILE
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write build metadata as JSON to FILE, with the keys docker buildx writes
    /// (`containerimage.digest`, `containerimage.config.digest`, `containerimage.descriptor`,
    /// `image.name`)
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Set a build argument KEY=VALUE (repeatable)
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Build this stage
    #[arg(long)]
    pub target: Option<String>,
    /// Threads for hashing and compression, 1 to 512 [default: number of CPUs]
    #[arg(short = 'j', long, value_parser = jobs_parser())]
    pub jobs: Option<usize>,
    /// Layer compression: gzip (default), zstd or none
    #[arg(long, default_value = "gzip", value_parser = compression_parser)]
    pub compression: Compression,
    /// Write the report as JSON
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report with an SVG chart per scenario
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Also run every scenario with another builder and report its wall time and the ratio
    #[arg(long, value_enum, value_name = "BUILDER")]
    pub peer: Option<Peer>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// `buildah bud --layers` (own temp storage, `--isolation chroot`)
    Buildah,
    /// BuildKit: `docker build` (`DOCKER_BUILDKIT=1`, `--network none`) against a private
    /// dockerd the bench starts in its temp dir (needs root and Debian's `docker.io`)
    Buildkit,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub build: BuildArgs,
    /// How many builds to compare (each from nothing, in a throwaway store) [default: 2; 1
    /// with --against]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: Option<u32>,
    /// Also compare run 1 with this image (does what was shipped reproduce?): registry:REF |
    /// store:NAME[:TAG] | oci:DIR[:TAG] | oci-archive:FILE | docker-archive:FILE; exit 1 unless
    /// bit-identical
    #[arg(long, value_name = "IMAGE")]
    pub against: Option<String>,
    /// Print a JSON report on stdout instead of the digest
    #[arg(long)]
    pub json: bool,
    /// Write a Markdown summary (runs, verdict, diff) to FILE, e.g. $GITHUB_STEP_SUMMARY
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Keep the throwaway stores, contexts and outputs in DIR (created) for debugging
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// When runs differ, at most N more builds to find the cause (run 1's conditions with one
    /// variation each; 0: do not look)
    #[arg(long, value_name = "N", default_value_t = 6)]
    pub max_builds: u32,
    /// Build every run as root, even where verify (as root) would build runs 2, 4, … rootless
    /// as a user with an /etc/subuid range
    #[arg(long)]
    pub no_rootless: bool,
    /// When reproducible, attach a SLSA Verification Summary Attestation (the runs, the
    /// variations) to run 1's image, beside its other attestations, and write the attested
    /// index to the --outputs again (docs/attestations.md)
    #[arg(long)]
    pub attest_verification: bool,
}

#[derive(Args, Debug)]
pub struct RebaseArgs {
    /// The image in the store, NAME[:TAG]
    pub image: String,
    /// The new base: oci-layout://DIR[:TAG|@DIGEST]
    #[arg(long, value_name = "NEWBASE")]
    pub onto: String,
    /// The old base (needed for images strata has no record of): oci-layout://DIR[:TAG]
    #[arg(long, value_name = "OLDBASE")]
    pub from: Option<String>,
    /// Assert that the layers above the base do not depend on it
    #[arg(long)]
    pub force: bool,
    /// Name the result (default: the image's own name)
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// Also write the result: type=oci,dest=DIR | type=oci-archive,dest=FILE | type=docker-archive,dest=FILE
    #[arg(short = 'o', long = "output", value_name = "SPEC", value_parser = output_parser)]
    pub outputs: Vec<Output>,
}

/// The largest `-j`. Each job is a thread with its own compression buffers and, for stages, a
/// build in flight: past the hardware threads of the largest common machines (256) more jobs
/// only add memory and contention. `-j 99999999999` started 15,608 threads and never made
/// progress (issue 18); 0 would build nothing.
pub const MAX_JOBS: u64 = 512;

fn jobs_parser() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_JOBS)
}

/// `--output SPEC` ([`Output`]'s parser: the destination is checked here, before anything is
/// built).
pub fn output_parser(spec: &str) -> Result<Output, String> {
    spec.parse::<Output>().map_err(|e| format!("{e:#}"))
}

/// A parsed `--provenance[=VALUE]`: `None` inside for `--provenance=false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProvenanceFlag(pub Option<ProvenanceMode>);

/// `--provenance=mode=min|mode=max|true|false`.
pub fn provenance_parser(s: &str) -> Result<ProvenanceFlag, String> {
    ProvenanceMode::parse_flag(s).map(ProvenanceFlag)
}

/// A parsed `--sbom[=VALUE]`: `None` inside for `--sbom=false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SbomFlag(pub Option<SbomFormat>);

/// `--sbom=format=spdx|format=cyclonedx|true|false`.
pub fn sbom_parser(s: &str) -> Result<SbomFlag, String> {
    SbomFormat::parse_flag(s).map(SbomFlag)
}

/// `--compression gzip|zstd|none`.
pub fn compression_parser(s: &str) -> Result<Compression, String> {
    s.parse::<Compression>().map_err(|e| e.to_string())
}

/// `--shard I/N`: shard I (1-based) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// `I/N` with 1 ≤ I ≤ N.
    pub fn parse(spec: &str) -> Result<Shard, String> {
        let bad = || {
            "expected I/N with 1 ≤ I ≤ N (e.g. --shard 2/4)\nhint: run N builds, with --shard 1/N … N/N"
                .to_string()
        };
        let (i, n) = spec.split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether the image `name` is in this shard: sha256 of the name, first 8 bytes as a
    /// little-endian integer, modulo N, plus 1. Depends on the name only, so every machine
    /// agrees and an image stays on its shard when others are added.
    pub fn holds(&self, name: &str) -> bool {
        shard_of(name, self.count) == self.index
    }
}

fn shard_of(name: &str, n: u64) -> u64 {
    let d = strata_cache::Digest::of(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_bytes()[..8]);
    u64::from_le_bytes(b) % n + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_every_name_once_and_stably() {
        let names: Vec<String> = (0..200).map(|i| format!("app{i:04}")).collect();
        let mut counts = [0usize; 4];
        for n in &names {
            let s = shard_of(n, 4);
            assert!((1..=4).contains(&s));
            assert_eq!(s, shard_of(n, 4), "deterministic");
            counts[(s - 1) as usize] += 1;
            let owners = (1..=4).filter(|&i| Shard { index: i, count: 4 }.holds(n));
            assert_eq!(owners.count(), 1, "{n} in exactly one shard");
        }
        assert!(counts.iter().all(|&c| c > 25), "{counts:?}");
        // Pinned: a change to the split moves images between machines.
        // (sha256("app0000")[..8] as LE u64) % 4 + 1, computed independently with Python.
        assert_eq!(shard_of("app0000", 4), 4);
        assert_eq!(shard_of("api", 4), 1);
        assert_eq!(shard_of("web", 1), 1);
        assert!(Shard::parse("0/2").is_err() && Shard::parse("3/2").is_err());
        assert!(Shard::parse("1/0").is_err() && Shard::parse("x").is_err());
        assert!(Shard::parse("4/3").unwrap_err().contains("expected I/N"));
        assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 2, count: 3 });
    }

    #[test]
    fn compression_names_round_trip_and_unknown_ones_are_refused() {
        for c in ["gzip", "zstd", "none"] {
            assert_eq!(compression_parser(c).unwrap().to_string(), c);
        }
        let e = compression_parser("lz4").unwrap_err();
        assert!(e.contains("unknown compression `lz4`"), "{e}");
    }

    #[test]
    fn lock_takes_no_build_output_flags() {
        let e = Cli::try_parse_from(["strata", "lock", "--output", "type=oci,dest=x"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument, "{e}");
        for flag in ["--tag", "--compression", "--image", "--shard", "--no-cache"] {
            let e = Cli::try_parse_from(["strata", "lock", flag, "x"]).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::UnknownArgument,
                "{flag}: {e}"
            );
        }
        let ok = Cli::try_parse_from(["strata", "lock", "ctx", "--all", "--update", "debian:12"])
            .unwrap();
        let Command::Lock(l) = ok.command else {
            panic!("not lock")
        };
        assert_eq!(l.context, PathBuf::from("ctx"));
        assert_eq!(l.update, Some(vec!["debian:12".to_string()]));
    }

    #[test]
    fn bad_flag_values_are_refused_by_clap_with_the_reason() {
        let e = Cli::try_parse_from(["strata", "build", "--compression", "lz4"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(e.to_string().contains("expected gzip, zstd or none"), "{e}");
        let e =
            Cli::try_parse_from(["strata", "build", "--output", "type=zip,dest=x"]).unwrap_err();
        assert!(e.to_string().contains("unknown --output type `zip`"), "{e}");
        let e = Cli::try_parse_from(["strata", "build", "--all", "--shard", "0/3"]).unwrap_err();
        assert!(e.to_string().contains("expected I/N"), "{e}");
    }
}

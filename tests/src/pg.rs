//! A throwaway PostgreSQL 15 cluster for tests and benchmarks.
//!
//! `initdb` refuses to run as root, so when the tests run as root the cluster
//! is created and run as the `postgres` user (`runuser`), in a temporary
//! directory that user owns. The server listens only on a unix socket in
//! that directory (no TCP port, nothing to collide with), with trust
//! authentication: the roles below are what the tests are about, not
//! passwords.
//!
//! [`Postgres::start`] also prepares the database Warden uses, the way the
//! README tells an operator to:
//! - `warden_owner` owns the database and runs the migrations;
//! - `warden_app` (no login) holds what the application may do;
//! - `warden` logs in, is a member of `warden_app`, and owns nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the PostgreSQL 15 server binaries are on these machines
/// (`WARDEN_PG_BIN` overrides).
pub fn bin_dir() -> PathBuf {
    std::env::var_os("WARDEN_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// One running cluster, stopped and deleted on drop.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    as_postgres: bool,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Postgres {
    /// Starts a cluster with durable commits (fsync on), creates the roles
    /// and the `warden` database, and migrates it as `warden_owner`.
    pub async fn start() -> Postgres {
        let pg = Postgres::start_unmigrated().await;
        warden_store::Store::migrate_postgres(&pg.owner_url())
            .await
            .expect("migrate as warden_owner");
        pg
    }

    /// Starts a cluster with the roles and the empty `warden` database, not
    /// migrated (for `warden db migrate`).
    pub async fn start_unmigrated() -> Postgres {
        let pg = Postgres::start_bare();
        pg.create_roles().await;
        pg
    }

    /// Starts an empty cluster (only the `postgres` superuser).
    pub fn start_bare() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("warden-pg-")
            .tempdir_in("/tmp")
            .expect("temp dir for postgres");
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(ok.success(), "chown of the cluster directory failed");
        }
        let pg = Postgres { dir, as_postgres };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
        );
        let opts = format!(
            "-k {} -c listen_addresses='' -c max_connections=300",
            pg.dir.path().display()
        );
        pg.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-D",
                &pg.data().to_string_lossy(),
                "-l",
                &pg.dir.path().join("server.log").to_string_lossy(),
                "-o",
                &opts,
            ],
        );
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let bin = bin_dir().join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let out = cmd.args(args).output().unwrap_or_else(|e| {
            panic!(
                "running {} (is PostgreSQL 15 installed?): {e}",
                bin.display()
            )
        });
        assert!(
            out.status.success(),
            "{tool} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The socket directory.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A URL for `user` on database `db`, over the unix socket.
    pub fn url_for(&self, user: &str, db: &str) -> String {
        format!(
            "postgres://{user}@localhost/{db}?host={}",
            self.socket_dir().display()
        )
    }

    /// The application role's URL (what `warden serve --database` gets).
    pub fn app_url(&self) -> String {
        self.url_for("warden", "warden")
    }

    /// The tables' owner's URL (what `warden db migrate` gets).
    pub fn owner_url(&self) -> String {
        self.url_for("warden_owner", "warden")
    }

    /// The superuser's URL.
    pub fn superuser_url(&self, db: &str) -> String {
        self.url_for("postgres", db)
    }

    async fn create_roles(&self) {
        use sqlx::Executor;
        sqlx::any::install_default_drivers();
        let mut su =
            <sqlx::AnyConnection as sqlx::Connection>::connect(&self.superuser_url("postgres"))
                .await
                .expect("connect as postgres");
        for stmt in [
            "CREATE ROLE warden_owner LOGIN",
            "CREATE ROLE warden_app NOLOGIN",
            "CREATE ROLE warden LOGIN IN ROLE warden_app",
            "CREATE DATABASE warden OWNER warden_owner",
        ] {
            su.execute(stmt).await.expect(stmt);
        }
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let bin = bin_dir().join("pg_ctl");
        let data = self.data();
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let _ = cmd
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&data)
            .output();
    }
}

//! Multi-process (multi-node) training the way `torchrun` launches it: every process reads its
//! place from the environment, and rank 0 hands the other ranks the NCCL id over TCP.
//!
//! | variable | meaning |
//! |---|---|
//! | `WORLD_SIZE` | number of processes (ranks) in the run |
//! | `RANK` | this process's rank, `0..WORLD_SIZE` |
//! | `LOCAL_RANK` | this process's rank on its node: the GPU it uses (default `RANK`) |
//! | `MASTER_ADDR`, `MASTER_PORT` | where rank 0 listens (default `127.0.0.1`, `29500`) |
//!
//! The exchange: rank 0 listens on `MASTER_ADDR:MASTER_PORT`, and each other rank connects
//! (retrying until rank 0 is up), sends a magic line with its rank and the world size, and
//! receives the 128-byte id. Every wait is bounded ([`TIMEOUT`]).

use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How long rank 0 waits for the others, and the others for rank 0.
pub const TIMEOUT: Duration = Duration::from_secs(300);
const MAGIC: &[u8; 8] = b"GPSTRDV1";

/// This process's place in a multi-process run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchEnv {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub master: String,
}

impl LaunchEnv {
    /// The run described by the environment, `None` when `WORLD_SIZE` is unset (a plain run).
    pub fn from_env() -> Result<Option<LaunchEnv>> {
        LaunchEnv::from_vars(|k| std::env::var(k).ok())
    }

    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<LaunchEnv>> {
        let Some(world) = var("WORLD_SIZE") else { return Ok(None) };
        let number = |name: &str, text: &str| -> Result<usize> {
            text.trim().parse::<usize>().map_err(|_| anyhow!("{name}={text:?} is not a number"))
        };
        let world = number("WORLD_SIZE", &world)?;
        if world == 0 {
            bail!("WORLD_SIZE=0: a run needs at least one rank");
        }
        let rank = number("RANK", &var("RANK").context("WORLD_SIZE is set but RANK is not")?)?;
        if rank >= world {
            bail!("RANK={rank} is not below WORLD_SIZE={world}");
        }
        let local_rank = match var("LOCAL_RANK") {
            Some(l) => number("LOCAL_RANK", &l)?,
            None => rank,
        };
        let addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        let port = var("MASTER_PORT").unwrap_or_else(|| "29500".into());
        let port: u16 = port.trim().parse().map_err(|_| anyhow!("MASTER_PORT={port:?} is not a port number"))?;
        Ok(Some(LaunchEnv { rank, world, local_rank, master: format!("{addr}:{port}") }))
    }

    /// Rank 0: `make()`s the id and sends it to every other rank; the others receive it.
    pub fn share_id(&self, make: impl FnOnce() -> Result<[u8; 128]>) -> Result<[u8; 128]> {
        if self.world == 1 {
            return make();
        }
        if self.rank == 0 {
            self.serve(make()?)
        } else {
            self.fetch()
        }
    }

    fn serve(&self, id: [u8; 128]) -> Result<[u8; 128]> {
        let listener =
            TcpListener::bind(&self.master).with_context(|| format!("rank 0 cannot listen on {}", self.master))?;
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + TIMEOUT;
        let mut served = vec![false; self.world];
        served[0] = true;
        while served.iter().any(|s| !s) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false)?;
                    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
                    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
                    let mut hello = [0u8; 24];
                    // A stranger on the port (a scanner, a stale run) is ignored, not fatal.
                    if conn.read_exact(&mut hello).is_err() || &hello[..8] != MAGIC {
                        continue;
                    }
                    let rank = u64::from_le_bytes(hello[8..16].try_into()?) as usize;
                    let world = u64::from_le_bytes(hello[16..24].try_into()?) as usize;
                    if world != self.world || rank == 0 || rank >= self.world {
                        bail!("a rank announced rank {rank} of {world}, but this run has WORLD_SIZE={}", self.world);
                    }
                    conn.write_all(&id).context("cannot send the NCCL id")?;
                    served[rank] = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        let missing: Vec<_> = (0..self.world).filter(|&r| !served[r]).collect();
                        bail!("ranks {missing:?} did not connect to {} within {} s", self.master, TIMEOUT.as_secs());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e).context("rank 0 cannot accept connections"),
            }
        }
        Ok(id)
    }

    fn fetch(&self) -> Result<[u8; 128]> {
        let deadline = Instant::now() + TIMEOUT;
        let addr = self
            .master
            .to_socket_addrs()
            .with_context(|| format!("MASTER_ADDR:MASTER_PORT {} cannot be resolved", self.master))?
            .next()
            .with_context(|| format!("{} has no address", self.master))?;
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(mut conn) => {
                    conn.set_read_timeout(Some(TIMEOUT))?;
                    let mut hello = Vec::with_capacity(24);
                    hello.extend_from_slice(MAGIC);
                    hello.extend_from_slice(&(self.rank as u64).to_le_bytes());
                    hello.extend_from_slice(&(self.world as u64).to_le_bytes());
                    conn.write_all(&hello).context("cannot reach rank 0")?;
                    let mut id = [0u8; 128];
                    conn.read_exact(&mut id).context("rank 0 did not send the NCCL id")?;
                    return Ok(id);
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("rank 0 at {} did not answer within {} s", self.master, TIMEOUT.as_secs())
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<Option<LaunchEnv>> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        LaunchEnv::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn the_torchrun_variables_are_read_and_checked() {
        assert_eq!(env(&[]).unwrap(), None);
        let e = env(&[("WORLD_SIZE", "4"), ("RANK", "2"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "node0")]).unwrap();
        assert_eq!(e, Some(LaunchEnv { rank: 2, world: 4, local_rank: 0, master: "node0:29500".into() }));
        let msg = |v: &[(&str, &str)]| env(v).unwrap_err().to_string();
        assert_eq!(msg(&[("WORLD_SIZE", "2")]), "WORLD_SIZE is set but RANK is not");
        assert_eq!(msg(&[("WORLD_SIZE", "2"), ("RANK", "2")]), "RANK=2 is not below WORLD_SIZE=2");
        assert_eq!(msg(&[("WORLD_SIZE", "x"), ("RANK", "0")]), "WORLD_SIZE=\"x\" is not a number");
        assert!(msg(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "99999")]).contains("MASTER_PORT"));
    }

    #[test]
    fn rank_zero_hands_its_id_to_every_other_rank() {
        // A free port: bind to 0, read it, release it.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let world = 3;
        let ranks: Vec<_> = (0..world)
            .map(|rank| {
                let e = LaunchEnv { rank, world, local_rank: rank, master: format!("127.0.0.1:{port}") };
                std::thread::spawn(move || e.share_id(|| Ok([7u8; 128])))
            })
            .collect();
        for r in ranks {
            assert_eq!(r.join().unwrap().unwrap(), [7u8; 128]);
        }
    }
}

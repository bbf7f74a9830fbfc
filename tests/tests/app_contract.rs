//! The application state machine contract, in process: the conformance
//! checks (`d_engine::app::app_conformance`) on the example machine
//! (`engine/facade/examples/app_jobs.rs`); an apply that fails or panics
//! stops the node, which reports failed and names the entry; a snapshot
//! whose reader fails is refused and the previous state kept.

#[allow(dead_code)]
#[path = "../../engine/facade/examples/app_jobs.rs"]
mod example;

use std::time::Duration;

use d_engine::app::{
    app_conformance, AppEngine, AppError, AppStateMachine, Application, Applying, Codec,
    ConformanceCase, Consistency, SnapshotImage,
};
use d_engine::config::Config;
use d_engine_storage::sm::StateMachine;
use d_engine_storage::snapshot::SnapshotStore;
use example::{Cmd, Jobs};

#[test]
fn the_example_machine_conforms() {
    let mut commands = vec![Cmd::Pop];
    for i in 0..12 {
        commands.push(Cmd::Incr(format!("c{}", i % 3), i));
        commands.push(Cmd::Push(format!("job{i}")));
        if i % 4 == 0 {
            commands.push(Cmd::Pop);
        }
    }
    app_conformance(
        Jobs::default,
        ConformanceCase {
            commands,
            probe: "dump".to_string(),
        },
    );
}

/// A sum that fails on a command of 13, panics on 666, and whose snapshot
/// reader refuses images when `refuse_restore` is set.
#[derive(Default)]
struct Fragile {
    sum: u64,
    refuse_restore: bool,
}

impl Application for Fragile {
    type Command = u64;
    type Output = u64;
    type Query = ();
    type QueryOutput = u64;
    fn apply(&mut self, batch: Vec<Applying<u64>>) -> Result<Vec<u64>, AppError> {
        let mut out = Vec::new();
        for a in batch {
            match a.command {
                13 => return Err(AppError::new(format!("13 is unlucky (entry {})", a.index))),
                666 => panic!("the devil at entry {}", a.index),
                n => {
                    self.sum += n;
                    out.push(self.sum);
                }
            }
        }
        Ok(out)
    }
    fn query(&self, _: &()) -> u64 {
        self.sum
    }
    fn snapshot(&self) -> Box<dyn SnapshotImage> {
        Box::new(self.sum.encode())
    }
    fn restore(&mut self, image: &mut dyn std::io::Read) -> Result<(), AppError> {
        if self.refuse_restore {
            return Err(AppError::new("this reader refuses every image"));
        }
        let mut b = Vec::new();
        image
            .read_to_end(&mut b)
            .map_err(|e| AppError::new(e.to_string()))?;
        self.sum = u64::decode(&b)?;
        Ok(())
    }
}

async fn single_node(dir: &std::path::Path) -> AppEngine<Fragile> {
    let mut config = Config::single_node(dir);
    config.client_addr.clear();
    let engine = d_engine::EmbeddedEngine::builder(config)
        .without_network()
        .start_app(Fragile::default)
        .await
        .unwrap();
    engine.wait_ready(Duration::from_secs(10)).await.unwrap();
    engine
}

async fn assert_stops_on(bad: u64, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let engine = single_node(dir.path()).await;
    assert_eq!(engine.propose(5).await.unwrap(), 5);
    assert_eq!(
        engine.query(&(), Consistency::Linearizable).await.unwrap(),
        5
    );
    assert!(
        engine.propose(bad).await.is_err(),
        "the failing write must fail"
    );
    // The node stopped applying and reports failed, naming the entry.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let health = engine.engine().handle().health();
        if !health.live {
            let why = health.reasons.join("; ");
            assert!(why.contains(what), "health does not name the cause: {why}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health still live after a failed apply: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = engine.propose(1).await.unwrap_err().to_string();
    assert!(e.contains(what) && e.contains("entry"), "{e}");
    assert_eq!(
        engine.machine().query(&()),
        5,
        "nothing after the failure applied"
    );
    let _ = engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_error_stops_the_node_and_names_the_entry() {
    assert_stops_on(13, "13 is unlucky").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_panic_stops_the_node_and_names_the_entry() {
    assert_stops_on(666, "the devil").await;
}

#[test]
fn a_snapshot_the_reader_refuses_keeps_the_previous_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let leader = AppStateMachine::new(Fragile::default);
    let entry = |index: u64, n: u64| d_engine::core::Entry {
        term: 1,
        index,
        payload: d_engine::core::EntryPayload::Command(
            // The log payload of an application command without write id.
            {
                let mut b = vec![0xA5, 0];
                b.extend_from_slice(&n.encode());
                b.into()
            },
        ),
    };
    leader.apply(&[entry(1, 2), entry(2, 3)]).unwrap();
    let info = store
        .create(&mut *leader.begin_snapshot().unwrap())
        .unwrap();

    let follower = AppStateMachine::new(|| Fragile {
        refuse_restore: true,
        ..Default::default()
    });
    follower.apply(&[entry(1, 2)]).unwrap();
    let e = follower
        .install_snapshot(&info.path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("refused") && e.contains("refuses every image"),
        "{e}"
    );
    assert_eq!(follower.applied_index(), 1, "the previous state is kept");
    assert_eq!(follower.query(&()), 2);
    // And it still applies the log.
    follower.apply(&[entry(2, 3)]).unwrap();
    assert_eq!(follower.query(&()), 5);
    // A reader that accepts it gets the leader's state.
    let ok = AppStateMachine::new(Fragile::default);
    assert_eq!(ok.install_snapshot(&info.path).unwrap().last_index, 2);
    assert_eq!(ok.query(&()), 5);
}

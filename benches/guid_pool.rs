//! GuidPool allocate+release with 100k and 1M GUIDs in use, in the default 2^56 range.
//! Run: `cargo bench --bench guid_pool`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fabric_sync::alloc::{GuidPool, GuidRange};
use fabric_sync::ib::Guid;

/// A pool with `n` GUIDs in use, fragmented: every fourth allocation is released again, so the
/// allocator walks a realistic mix of runs and holes.
fn fragmented_pool(n: usize) -> (GuidPool, Vec<Guid>) {
    let mut pool = GuidPool::new(GuidRange::DEFAULT);
    let mut held = Vec::with_capacity(n);
    while held.len() < n {
        let mut batch = Vec::with_capacity(4);
        for _ in 0..4 {
            batch.push(pool.allocate().expect("default range holds 2^56 GUIDs"));
        }
        let freed = batch.remove(1);
        pool.release(freed).expect("just allocated");
        held.extend(batch);
    }
    (pool, held)
}

fn allocate_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("guid_pool_allocate_release");
    for n in [100_000usize, 1_000_000] {
        let (mut pool, held) = fragmented_pool(n);
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                // Churn: release one held GUID, allocate a new one; in-use count stays n.
                let victim = held[i % held.len()];
                i += 1;
                let _ = pool.release(victim);
                let g = pool.allocate().expect("not exhausted");
                let _ = pool.reserve(victim);
                pool.release(g).expect("allocated above");
                black_box(g)
            })
        });
    }
    group.finish();
}

fn reserve_specific(c: &mut Criterion) {
    let (mut pool, held) = fragmented_pool(1_000_000);
    let probe = held[held.len() / 2];
    c.bench_function("guid_pool_reserve_conflict_1m", |b| {
        b.iter(|| black_box(pool.reserve(black_box(probe)).is_err()))
    });
}

criterion_group!(benches, allocate_release, reserve_specific);
criterion_main!(benches);

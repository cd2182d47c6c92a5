//! Prints `paillier_cli::bench::run` timings: `cargo run --release -p paillier-cli
//! --example bench_table -- [bits] [iterations]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bits: usize = args.next().map_or(Ok(2048), |s| s.parse())?;
    let iterations: usize = args.next().map_or(Ok(50), |s| s.parse())?;
    println!(
        "{:<24} {:>6} {:>6} {:>12} {:>12} {:>14}",
        "operation", "bits", "iters", "median ms", "mean ms", "ms per value"
    );
    for r in paillier_cli::bench::run(bits, iterations)? {
        println!(
            "{:<24} {:>6} {:>6} {:>12.4} {:>12.4} {:>14.5}",
            r.operation,
            r.bits,
            r.iterations,
            r.median_ms,
            r.mean_ms,
            r.median_ms_per_value()
        );
    }
    Ok(())
}

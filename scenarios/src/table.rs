//! The scenario table as printed: one line per hospital (rows, local-only
//! MSE, federated MSE, change), the pooled reference and the test set's size.

use crate::outcome::{is_readable, Outcome};

/// The table as printed: hospital, rows, local-only MSE, federated MSE, change.
pub fn table(outcome: &Outcome) -> String {
    let mut s = format!(
        "{:<12} {:>6} {:>15} {:>14} {:>18}\n",
        "hospital", "rows", "local-only MSE", "federated MSE", "change"
    );
    let mut diverged = false;
    for h in &outcome.hospitals {
        let change = h.federated_mse - h.local_mse;
        diverged |= !is_readable(h.local_mse) || !is_readable(h.federated_mse);
        let change = if is_readable(change) {
            format!("{change:.2} ({:+.1}%)", 100.0 * change / h.local_mse)
        } else {
            "n/a".to_owned()
        };
        s += &format!(
            "{:<12} {:>6} {:>15} {:>14} {:>18}\n",
            h.name,
            h.rows,
            fmt_mse(h.local_mse),
            fmt_mse(h.federated_mse),
            change
        );
    }
    s += &format!(
        "{:<12} {:>6} {:>15} {:>14}   reference: {}\n",
        "pooled",
        outcome.pooled_rows,
        "",
        fmt_mse(outcome.pooled_mse),
        outcome.pooled_method
    );
    s += &format!("test set: {} rows\n", outcome.test_rows);
    if diverged {
        s += "note: a model diverged (eta, the step on the mean gradient, is too large for \
              these rows; lower --eta or let the federation scale them)\n";
    }
    s
}

/// Two decimals, or scientific notation for a diverged model.
fn fmt_mse(v: f64) -> String {
    if is_readable(v) {
        format!("{v:.2}")
    } else {
        format!("{v:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::tests::example;

    #[test]
    fn table_has_one_line_per_hospital_and_the_pooled_reference() {
        let o = example();
        let t = table(&o);
        assert!(
            t.contains("hospital-1      130         3933.78        3695.77"),
            "{t}"
        );
        assert!(t.contains("pooled          390"), "{t}");
        // Checked with NumPy: 100 steps of 0.01 * grad / 3 on the 390 pooled
        // rows give 3694.66; their least-squares optimum 4181.24.
        assert!(
            t.contains("pooled          390                        3694.66"),
            "{t}"
        );
        assert!((o.pooled_least_squares_mse.unwrap() - 4181.2351411179).abs() < 1e-6);
    }

    #[test]
    fn diverged_models_print_readably() {
        let mut o = example();
        o.hospitals[0].local_mse = 2.5e180;
        o.hospitals[1].local_mse = f64::INFINITY;
        let t = table(&o);
        assert!(t.contains("2.500e180"), "{t}");
        assert!(t.contains("note: a model diverged"), "{t}");
        assert!(t.lines().all(|l| l.len() < 200), "{t}");
    }
}

//! Head-to-head counts between the optimizers of a run.

use super::*;

// ---------------------------------------------------------------------------------------
// Head to head
// ---------------------------------------------------------------------------------------

/// Opponent name of the column that counts cells won against every classic optimizer.
pub const ALL_CLASSIC: &str = "all classic";

/// How often `optimizer` beats `opponent` over the (function, d) cells both ran.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeadToHead {
    pub optimizer: String,
    /// Another optimizer of the run, or [`ALL_CLASSIC`]: every classic optimizer of the
    /// run at once (a cell counts when it beats each of them).
    pub opponent: String,
    pub cells: usize,
    /// Cells where its mean final gap is lower (a diverged start makes a mean +∞, and
    /// +∞ is never lower).
    pub lower_gap: usize,
    /// Cells where it reaches the threshold in fewer steps on average over all starts, a
    /// start that never reaches it counting as T + 1 (so reaching it from more starts
    /// counts, and a cell neither reaches is a tie).
    pub fewer_steps: usize,
    /// Cells where its median gap gets to the opponent's final median gap in fewer
    /// steps than the opponent's own (see [`speedup_to_level`]).
    pub sooner_to_level: usize,
    /// Of those, cells where it gets there in a tenth of the opponent's steps or fewer:
    /// the paper's "10x fewer steps".
    pub ten_times_sooner: usize,
    /// Cells where it gets there in a tenth of the opponent's evaluations or fewer (see
    /// [`evals_speedup_to_level`]).
    pub ten_times_fewer_evals: usize,
    /// Start points both ran (the same points, over every cell both ran).
    pub starts: usize,
    /// Of those, the start points where it ends strictly lower (a diverged start is +∞,
    /// so it never ends lower, and two diverged starts tie): the paired comparison.
    pub paired_lower: usize,
}

fn lower_gap(a: &Cell, b: &Cell) -> bool {
    scored_gap(a.mean_gap) < scored_gap(b.mean_gap)
}

/// Start points of a cell where `a` ends strictly lower than every cell of `them` (same
/// seeds, so the same start points).
fn paired_lower(a: &Cell, them: &[&Cell]) -> usize {
    (0..a.final_gaps.len())
        .filter(|&i| {
            let ga = scored_gap(a.final_gaps[i]);
            them.iter()
                .all(|b| b.final_gaps.get(i).is_some_and(|&gb| ga < scored_gap(gb)))
        })
        .count()
}

/// Mean steps to the threshold over all of a cell's starts, T + 1 for a start that
/// did not reach it within the budget T.
pub(super) fn censored_steps(c: &Cell, budget: u32) -> f64 {
    let n = c.final_gaps.len().max(1) as f64;
    let k = c.reached_threshold as f64;
    let miss = (budget + 1) as f64;
    (c.steps_to_threshold.unwrap_or(0.0) * k + miss * (n - k)) / n
}

pub(super) fn fewer_steps(a: &Cell, b: &Cell, budget: u32) -> bool {
    censored_steps(a, budget) < censored_steps(b, budget)
}

/// Relative slack on an opponent's final level: its median curve can creep down by a
/// hair until the last step, which would otherwise date its arrival at T.
const LEVEL_SLACK: f64 = 0.01;

/// First iterations at which `a` and `b` get to b's final median gap (within 1 %):
/// a fixed threshold such as 1e-3 is never reached on the rugged functions within the
/// budget, this level always is by `b`. None where b's final median is not finite, `a`
/// never gets there, or b never moves from the start.
fn arrivals_at_level(a: &Cell, b: &Cell) -> Option<(usize, usize)> {
    let level = *b.curve.last()?;
    if !level.is_finite() {
        return None;
    }
    let level = level + LEVEL_SLACK * level.abs();
    let first = |c: &Cell| c.curve.iter().position(|&g| g <= level);
    let tb = first(b)?;
    let ta = first(a)?;
    (tb > 0).then_some((ta, tb))
}

/// How many times sooner `a` reaches what `b` ends at: b's arrival iteration over a's
/// (at least 1), see `arrivals_at_level`.
pub fn speedup_to_level(a: &Cell, b: &Cell) -> Option<f64> {
    let (ta, tb) = arrivals_at_level(a, b)?;
    Some(tb as f64 / ta.max(1) as f64)
}

/// The same arrivals counted in objective/gradient evaluations (median over starts):
/// a line search pays several per iteration where a learned step pays one, and the
/// evaluations are what a user's simulation is charged for. None also where a cell
/// has no evaluation curve (results written before it was recorded).
pub fn evals_speedup_to_level(a: &Cell, b: &Cell) -> Option<f64> {
    let (ta, tb) = arrivals_at_level(a, b)?;
    let (ea, eb) = (a.evals_curve.get(ta)?, b.evals_curve.get(tb)?);
    Some(eb / ea.max(1.0))
}

/// Every optimizer against every other and against all classic ones at once: the
/// counts behind "beats Adam and L-BFGS on most cells", computed, not read off a table.
pub fn head_to_head(res: &EvalResults) -> Vec<HeadToHead> {
    let (functions, dims, optimizers) = axes(res);
    let classic: Vec<&str> = optimizers
        .iter()
        .copied()
        .filter(|o| Method::parse(o).is_ok_and(|m| m.model_kind().is_none()))
        .collect();
    let mut out = Vec::new();
    for &o in &optimizers {
        let others = optimizers
            .iter()
            .filter(|&&p| p != o)
            .map(|&p| (p, vec![p]));
        let all = (!classic.is_empty()).then(|| {
            let rest: Vec<&str> = classic.iter().copied().filter(|&p| p != o).collect();
            (ALL_CLASSIC, rest)
        });
        for (name, opponents) in others.chain(all) {
            if opponents.is_empty() {
                continue;
            }
            let mut h = HeadToHead {
                optimizer: o.into(),
                opponent: name.into(),
                cells: 0,
                lower_gap: 0,
                starts: 0,
                paired_lower: 0,
                fewer_steps: 0,
                sooner_to_level: 0,
                ten_times_sooner: 0,
                ten_times_fewer_evals: 0,
            };
            for f in &functions {
                for &d in &dims {
                    let Some(a) = find(res, f, d, o) else {
                        continue;
                    };
                    let them: Option<Vec<&Cell>> =
                        opponents.iter().map(|p| find(res, f, d, p)).collect();
                    let Some(them) = them else { continue };
                    h.cells += 1;
                    h.lower_gap += them.iter().all(|b| lower_gap(a, b)) as usize;
                    h.starts += a.final_gaps.len();
                    h.paired_lower += paired_lower(a, &them);
                    h.fewer_steps += them.iter().all(|b| fewer_steps(a, b, res.steps)) as usize;
                    let speedups: Vec<f64> = them
                        .iter()
                        .map(|b| speedup_to_level(a, b).unwrap_or(0.0))
                        .collect();
                    h.sooner_to_level += speedups.iter().all(|&s| s > 1.0) as usize;
                    h.ten_times_sooner += speedups.iter().all(|&s| s >= 10.0) as usize;
                    h.ten_times_fewer_evals += them
                        .iter()
                        .all(|b| evals_speedup_to_level(a, b).is_some_and(|s| s >= 10.0))
                        as usize;
                }
            }
            out.push(h);
        }
    }
    out
}

/// What one head-to-head matrix shows for a (row, column) pair.
type CellText = Box<dyn Fn(&HeadToHead) -> String>;

/// The head-to-head counts as matrices (row against column) for the terminal.
pub(super) fn head_to_head_table(res: &EvalResults, out: &mut String) {
    let h = head_to_head(res);
    let (_, _, optimizers) = axes(res);
    let mut columns: Vec<&str> = optimizers.clone();
    if h.iter().any(|x| x.opponent == ALL_CLASSIC) {
        columns.push(ALL_CLASSIC);
    }
    let of_cells =
        |count: fn(&HeadToHead) -> usize| move |x: &HeadToHead| format!("{}/{}", count(x), x.cells);
    let matrices: [(&str, CellText); 6] = [
        (
            "Head to head, cells where the row's mean final gap is lower than the column's \
             (a diverged start makes a mean +inf)",
            Box::new(of_cells(|x| x.lower_gap)),
        ),
        (
            "Head to head, cells where the row reaches the threshold in fewer steps",
            Box::new(of_cells(|x| x.fewer_steps)),
        ),
        (
            "Head to head, cells where the row's median gap reaches the column's final \
             median gap (within 1 %) in fewer steps than the column",
            Box::new(of_cells(|x| x.sooner_to_level)),
        ),
        (
            "Head to head, the same in at most a tenth of the column's steps (10x fewer)",
            Box::new(of_cells(|x| x.ten_times_sooner)),
        ),
        (
            "Head to head, the same in at most a tenth of the column's objective/gradient \
             evaluations (a line search spends several per step)",
            Box::new(of_cells(|x| x.ten_times_fewer_evals)),
        ),
        (
            "Paired, the share of start points where the row ends lower than the column \
             (the same start points; a diverged start is +inf, two tie)",
            Box::new(|x: &HeadToHead| {
                format!(
                    "{:.0}%",
                    100.0 * x.paired_lower as f64 / x.starts.max(1) as f64
                )
            }),
        ),
    ];
    for (title, show) in matrices {
        let _ = writeln!(out, "\n{title} (of the cells both ran):");
        let mut rows = vec![std::iter::once(String::new())
            .chain(columns.iter().map(|c| c.to_string()))
            .collect::<Vec<_>>()];
        for &o in &optimizers {
            let mut row = vec![o.to_string()];
            for &c in &columns {
                row.push(
                    h.iter()
                        .find(|x| x.optimizer == o && x.opponent == c)
                        .map_or("-".into(), &show),
                );
            }
            rows.push(row);
        }
        let right: Vec<bool> = (0..rows[0].len()).map(|i| i > 0).collect();
        push_columns(out, &rows, &right, "  ");
    }
}

/// Writes the head-to-head counts as CSV, one row per (optimizer, opponent).
pub fn write_head_to_head(res: &EvalResults, path: &Path) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    for h in head_to_head(res) {
        w.serialize(h)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

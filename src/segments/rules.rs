//! RFM scores to named segments: a pure mapping, applied by the database through a 125-row table.
//!
//! Scores run 1 (worst) to 5 (best): recency is how recently the customer last ordered or was in
//! contact, frequency how many orders and interactions they had in the window, monetary what they
//! spent in it. The names follow the usual RFM grid (recency against frequency), with monetary
//! breaking out big spenders who are otherwise unremarkable.

/// Every segment the run assigns, in the order they are tested.
pub const SEGMENTS: &[&str] = &[
    "no_activity",
    "champions",
    "loyal",
    "cant_lose",
    "at_risk",
    "big_spenders",
    "new",
    "promising",
    "potential_loyalists",
    "needs_attention",
    "about_to_sleep",
    "hibernating",
    "lost",
];

/// The segment of a customer with these scores. `active` is false for a customer with no order
/// and no interaction in the window.
pub fn segment_of(recency: i16, frequency: i16, monetary: i16, active: bool) -> &'static str {
    let (r, f, m) = (recency, frequency, monetary);
    match () {
        _ if !active => "no_activity",
        _ if r >= 4 && f >= 4 => "champions",
        _ if r >= 3 && f >= 4 => "loyal",
        _ if r == 1 && f >= 4 => "cant_lose",
        _ if r <= 2 && f >= 3 => "at_risk",
        _ if m == 5 => "big_spenders",
        _ if r == 5 && f == 1 => "new",
        _ if r == 4 && f == 1 => "promising",
        _ if r >= 4 => "potential_loyalists",
        _ if r == 3 && f >= 2 => "needs_attention",
        _ if r == 3 => "about_to_sleep",
        _ if r == 2 => "hibernating",
        _ => "lost",
    }
}

/// Every (recency, frequency, monetary, active) combination with its segment, as columns.
#[derive(Debug, Default)]
pub struct Grid {
    pub recency: Vec<i16>,
    pub frequency: Vec<i16>,
    pub monetary: Vec<i16>,
    pub active: Vec<bool>,
    pub segment: Vec<&'static str>,
}

pub fn grid() -> Grid {
    let mut grid = Grid::default();
    for active in [false, true] {
        for r in 1..=5 {
            for f in 1..=5 {
                for m in 1..=5 {
                    grid.recency.push(r);
                    grid.frequency.push(f);
                    grid.monetary.push(m);
                    grid.active.push(active);
                    grid.segment.push(segment_of(r, f, m, active));
                }
            }
        }
    }
    grid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_names_the_usual_customers() {
        assert_eq!(segment_of(5, 5, 5, true), "champions");
        assert_eq!(segment_of(3, 5, 1, true), "loyal");
        assert_eq!(segment_of(1, 5, 5, true), "cant_lose");
        assert_eq!(segment_of(2, 3, 3, true), "at_risk");
        assert_eq!(segment_of(3, 1, 5, true), "big_spenders");
        assert_eq!(segment_of(5, 1, 1, true), "new");
        assert_eq!(segment_of(4, 1, 2, true), "promising");
        assert_eq!(segment_of(4, 3, 2, true), "potential_loyalists");
        assert_eq!(segment_of(3, 2, 2, true), "needs_attention");
        assert_eq!(segment_of(3, 1, 1, true), "about_to_sleep");
        assert_eq!(segment_of(2, 2, 2, true), "hibernating");
        assert_eq!(segment_of(1, 1, 1, true), "lost");
        assert_eq!(segment_of(5, 5, 5, false), "no_activity");
    }

    #[test]
    fn every_combination_has_a_listed_segment_and_every_segment_is_reachable() {
        let grid = grid();
        let names = grid.segment;
        assert_eq!(grid.recency.len(), 250);
        assert!(names.iter().all(|n| SEGMENTS.contains(n)));
        for name in SEGMENTS {
            assert!(names.contains(name), "{name} is reachable");
        }
    }
}

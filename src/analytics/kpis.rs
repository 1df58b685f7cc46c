//! KPI definitions: from a group's call tallies to its KPIs (pure; docs/KPIS.md in code).

/// What the database sums for a group of calls (times in milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub offered: i64,
    /// Answered, whether ended or still connected.
    pub answered: i64,
    /// The caller hung up in a queue (or ringing an agent) before an answer.
    pub abandoned: i64,
    /// ... within the short-abandon threshold of entering the queue.
    pub short_abandoned: i64,
    /// Abandons within the service-level threshold of entering the queue, and of those the short
    /// ones (for the service level's variants).
    pub abandoned_within: i64,
    pub short_abandoned_within: i64,
    /// Ended unanswered before reaching any queue (in the IVR): self-service, not abandons.
    pub self_service: i64,
    pub in_progress: i64,
    /// Answered within the service-level threshold.
    pub answered_within: i64,
    /// Sum over answered calls of the wait from queue entry (or offer) to answer.
    pub wait_ms: f64,
    /// ... and of its square, for the spread (the scorecard's confidence intervals).
    pub wait_ms_sq: f64,
    /// Answered and ended calls: the handled ones.
    pub handled: i64,
    /// Connected time (first answer to end) less hold and the transfer gaps below.
    pub talk_ms: f64,
    pub hold_ms: f64,
    /// After the first answer: ringing a transfer target, and waiting again in a queue.
    pub transfer_ring_ms: f64,
    pub requeue_wait_ms: f64,
    /// Handled calls whose after-call work is within the cap (the AHT's calls), their talk, hold
    /// and after-call work together, and their after-call work alone.
    pub aht_calls: i64,
    pub aht_ms: f64,
    pub wrap_up_ms: f64,
    /// Sums of the squares of each AHT call's handle time and after-call work.
    pub aht_ms_sq: f64,
    pub wrap_up_ms_sq: f64,
    /// Handled calls whose after-call work passed the cap.
    pub wrap_up_outliers: i64,
    /// Answered calls transferred at least once.
    pub transferred: i64,
    /// Handled calls from a known customer: the base of first-contact resolution.
    pub with_customer: i64,
    /// ... followed by another call from the same customer within the repeat window.
    pub repeated: i64,
    /// ... wrapped up with a resolving disposition and not repeated.
    pub first_contact_resolved: i64,
    /// Scores left on feedback linked to the calls.
    pub csat_sum: i64,
    pub csat_count: i64,
    /// CSAT scores of 4 or 5.
    pub csat_top_two: i64,
    pub nps_promoters: i64,
    pub nps_detractors: i64,
    pub nps_count: i64,
    /// Outbound campaign attempts that reached the customer, and those that converted.
    pub reached: i64,
    pub converted: i64,
    /// Agent time in BUSY or AFTER_CALL_WORK, and in AVAILABLE (from the state history).
    pub occupied_ms: f64,
    pub idle_ms: f64,
}

/// The KPIs of one group, in the units of the API (counts, fractions, seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Kpis {
    pub offered: f64,
    pub answered: f64,
    pub abandoned: f64,
    pub short_abandoned: f64,
    pub in_progress: f64,
    pub self_service: f64,
    pub wrap_up_outliers: f64,
    pub abandonment_rate: Option<f64>,
    pub average_speed_of_answer: Option<f64>,
    pub service_level: Option<f64>,
    pub average_handle_time: Option<f64>,
    pub average_talk_time: Option<f64>,
    pub average_hold_time: Option<f64>,
    pub average_transfer_ring_time: Option<f64>,
    pub average_requeue_wait_time: Option<f64>,
    pub average_wrap_up_time: Option<f64>,
    pub transfer_rate: Option<f64>,
    pub first_contact_resolution: Option<f64>,
    pub repeat_contact_rate: Option<f64>,
    /// Mean CSAT (1-5).
    pub csat: Option<f64>,
    /// The share of CSAT scores that are 4 or 5.
    pub csat_top_two_box: Option<f64>,
    /// Promoters minus detractors, in points (-100 to 100).
    pub nps: Option<f64>,
    pub conversions: f64,
    /// Conversions / attempts that reached the customer.
    pub conversion_rate: Option<f64>,
    /// Occupied agent time / (occupied + available agent time).
    pub occupancy: Option<f64>,
}

/// The service level's variants (docs/KPIS.md): by default, answered within the threshold /
/// (answered + abandoned after the short-abandon threshold).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceLevelRule {
    /// Short abandons count in the denominator too.
    pub include_short_abandons: bool,
    /// Abandons within the threshold count as met (in the numerator too).
    pub quick_abandons_met: bool,
}

fn ratio(numerator: f64, denominator: i64) -> Option<f64> {
    (denominator > 0).then(|| numerator / denominator as f64)
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Self) {
        self.offered += other.offered;
        self.answered += other.answered;
        self.abandoned += other.abandoned;
        self.short_abandoned += other.short_abandoned;
        self.abandoned_within += other.abandoned_within;
        self.short_abandoned_within += other.short_abandoned_within;
        self.self_service += other.self_service;
        self.in_progress += other.in_progress;
        self.answered_within += other.answered_within;
        self.wait_ms += other.wait_ms;
        self.wait_ms_sq += other.wait_ms_sq;
        self.handled += other.handled;
        self.talk_ms += other.talk_ms;
        self.hold_ms += other.hold_ms;
        self.transfer_ring_ms += other.transfer_ring_ms;
        self.requeue_wait_ms += other.requeue_wait_ms;
        self.aht_calls += other.aht_calls;
        self.aht_ms += other.aht_ms;
        self.wrap_up_ms += other.wrap_up_ms;
        self.aht_ms_sq += other.aht_ms_sq;
        self.wrap_up_ms_sq += other.wrap_up_ms_sq;
        self.wrap_up_outliers += other.wrap_up_outliers;
        self.transferred += other.transferred;
        self.with_customer += other.with_customer;
        self.repeated += other.repeated;
        self.first_contact_resolved += other.first_contact_resolved;
        self.csat_sum += other.csat_sum;
        self.csat_count += other.csat_count;
        self.csat_top_two += other.csat_top_two;
        self.nps_promoters += other.nps_promoters;
        self.nps_detractors += other.nps_detractors;
        self.nps_count += other.nps_count;
        self.reached += other.reached;
        self.converted += other.converted;
        self.occupied_ms += other.occupied_ms;
        self.idle_ms += other.idle_ms;
    }
}

impl Tally {
    /// Campaign attempts: (reached, converted).
    pub fn converting((reached, converted): (i64, i64)) -> Tally {
        Tally {
            reached,
            converted,
            ..Tally::default()
        }
    }

    /// Agent time: (occupied ms, idle ms).
    pub fn occupying((occupied_ms, idle_ms): (f64, f64)) -> Tally {
        Tally {
            occupied_ms,
            idle_ms,
            ..Tally::default()
        }
    }

    /// The tally of a whole made of these parts (groups partition the calls).
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a Tally>) -> Tally {
        let mut total = Tally::default();
        for part in parts {
            total += *part;
        }
        total
    }

    /// The service level's (met, counted) calls under `rule`.
    pub fn service_level_counts(&self, rule: ServiceLevelRule) -> (i64, i64) {
        let (short, short_within) = match rule.include_short_abandons {
            true => (0, 0),
            false => (self.short_abandoned, self.short_abandoned_within),
        };
        let met = self.answered_within
            + match rule.quick_abandons_met {
                true => self.abandoned_within - short_within,
                false => 0,
            };
        (met, self.answered + self.abandoned - short)
    }

    pub fn kpis(&self, rule: ServiceLevelRule) -> Kpis {
        let seconds = |ms: f64| ms / 1000.0;
        // The calls the queue decided: every answer (ended or still connected, on both sides of
        // the fraction alike) and every abandon after the short-abandon threshold. Self-service
        // calls, calls still waiting and short abandons (misdials, callers who changed their
        // mind) are none of its doing.
        let decided = self.answered + self.abandoned - self.short_abandoned;
        let (sl_met, sl_calls) = self.service_level_counts(rule);
        Kpis {
            offered: self.offered as f64,
            answered: self.answered as f64,
            abandoned: self.abandoned as f64,
            short_abandoned: self.short_abandoned as f64,
            in_progress: self.in_progress as f64,
            self_service: self.self_service as f64,
            wrap_up_outliers: self.wrap_up_outliers as f64,
            abandonment_rate: ratio((self.abandoned - self.short_abandoned) as f64, decided),
            average_speed_of_answer: ratio(seconds(self.wait_ms), self.answered),
            service_level: ratio(sl_met as f64, sl_calls),
            average_handle_time: ratio(seconds(self.aht_ms), self.aht_calls),
            average_talk_time: ratio(seconds(self.talk_ms), self.handled),
            average_hold_time: ratio(seconds(self.hold_ms), self.handled),
            average_transfer_ring_time: ratio(seconds(self.transfer_ring_ms), self.handled),
            average_requeue_wait_time: ratio(seconds(self.requeue_wait_ms), self.handled),
            average_wrap_up_time: ratio(seconds(self.wrap_up_ms), self.aht_calls),
            transfer_rate: ratio(self.transferred as f64, self.answered),
            first_contact_resolution: ratio(self.first_contact_resolved as f64, self.with_customer),
            repeat_contact_rate: ratio(self.repeated as f64, self.with_customer),
            csat: ratio(self.csat_sum as f64, self.csat_count),
            csat_top_two_box: ratio(self.csat_top_two as f64, self.csat_count),
            nps: ratio(
                100.0 * (self.nps_promoters - self.nps_detractors) as f64,
                self.nps_count,
            ),
            conversions: self.converted as f64,
            conversion_rate: ratio(self.converted as f64, self.reached),
            occupancy: (self.occupied_ms + self.idle_ms > 0.0)
                .then(|| self.occupied_ms / (self.occupied_ms + self.idle_ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour() -> Tally {
        Tally {
            offered: 12,
            answered: 6,
            abandoned: 3,
            short_abandoned: 1,
            abandoned_within: 2,
            short_abandoned_within: 1,
            self_service: 2,
            in_progress: 1,
            answered_within: 4,
            wait_ms: 60_000.0,
            handled: 5,
            talk_ms: 500_000.0,
            hold_ms: 50_000.0,
            transfer_ring_ms: 10_000.0,
            requeue_wait_ms: 40_000.0,
            aht_calls: 4,
            aht_ms: 520_000.0,
            wrap_up_ms: 80_000.0,
            wrap_up_outliers: 1,
            transferred: 3,
            with_customer: 4,
            repeated: 1,
            first_contact_resolved: 2,
            csat_sum: 9,
            csat_count: 3,
            csat_top_two: 2,
            nps_promoters: 2,
            nps_detractors: 1,
            nps_count: 4,
            reached: 4,
            converted: 1,
            occupied_ms: 3_000.0,
            idle_ms: 1_000.0,
            ..Default::default()
        }
    }

    #[test]
    fn rates_count_answers_and_abandons_after_the_short_threshold() {
        let k = hour().kpis(ServiceLevelRule::default());
        // 6 answered + 3 abandoned - 1 short abandon = 8 decided calls; self-service and the call
        // still waiting are in neither side.
        assert_eq!(k.abandonment_rate, Some(2.0 / 8.0));
        assert_eq!(k.service_level, Some(4.0 / 8.0));
        assert_eq!(k.average_speed_of_answer, Some(10.0));
        assert_eq!(k.average_handle_time, Some(130.0), "520 s over 4 calls");
        assert_eq!(k.average_wrap_up_time, Some(20.0), "80 s over the same 4");
        assert_eq!(k.average_talk_time, Some(100.0), "over all 5 handled");
        assert_eq!(
            k.average_transfer_ring_time,
            Some(2.0),
            "10 s over the same 5"
        );
        assert_eq!(k.average_requeue_wait_time, Some(8.0));
        assert_eq!(k.wrap_up_outliers, 1.0);
        assert_eq!(k.self_service, 2.0);
        assert_eq!(k.transfer_rate, Some(0.5));
        assert_eq!(k.first_contact_resolution, Some(0.5));
        assert_eq!(k.repeat_contact_rate, Some(0.25));
        assert_eq!(k.csat, Some(3.0));
        assert_eq!(k.csat_top_two_box, Some(2.0 / 3.0));
        assert_eq!(k.nps, Some(25.0), "(2 - 1) of 4, in points");
        assert_eq!(k.conversion_rate, Some(0.25));
        assert_eq!(k.occupancy, Some(0.75));
    }

    #[test]
    fn the_service_levels_variants_move_abandons_between_the_sides() {
        let tally = hour();
        let sl = |include_short_abandons, quick_abandons_met| {
            tally
                .kpis(ServiceLevelRule {
                    include_short_abandons,
                    quick_abandons_met,
                })
                .service_level
        };
        assert_eq!(sl(false, false), Some(4.0 / 8.0));
        assert_eq!(
            sl(true, false),
            Some(4.0 / 9.0),
            "the short abandon counts against"
        );
        assert_eq!(
            sl(false, true),
            Some(5.0 / 8.0),
            "one abandon within, not short"
        );
        assert_eq!(sl(true, true), Some(6.0 / 9.0), "both abandons within");
    }

    #[test]
    fn the_service_level_never_passes_one() {
        // Every call answered within the threshold, one still connected: 1, never more.
        let tally = Tally {
            offered: 3,
            answered: 3,
            answered_within: 3,
            in_progress: 1,
            abandoned: 2,
            short_abandoned: 2,
            abandoned_within: 2,
            short_abandoned_within: 2,
            ..Tally::default()
        };
        for include_short_abandons in [false, true] {
            for quick_abandons_met in [false, true] {
                let sl = tally
                    .kpis(ServiceLevelRule {
                        include_short_abandons,
                        quick_abandons_met,
                    })
                    .service_level
                    .expect("a value");
                assert!((0.0..=1.0).contains(&sl), "{sl}");
            }
        }
    }

    #[test]
    fn an_empty_group_has_counts_but_no_averages() {
        let k = Tally::default().kpis(ServiceLevelRule::default());
        assert_eq!(k.offered, 0.0);
        assert_eq!(k.abandonment_rate, None);
        assert_eq!(k.average_handle_time, None);
        assert_eq!(k.occupancy, None);
    }
}

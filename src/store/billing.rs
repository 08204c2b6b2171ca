//! Billing: users' Creem subscriptions and the webhook events already handled.

use super::{now_ms, Store, StoreError};
use crate::billing::{Change, Decision, SubscriptionRecord};

const SUBSCRIPTION_COLUMNS: &str =
    "user_id, creem_customer_id, creem_subscription_id, product_id, plan, status, \
     current_period_end, updated_at, last_event_at";

/// What became of a webhook event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventOutcome {
    /// Its id was handled before: nothing was done.
    Duplicate,
    /// Recorded; it changed nothing.
    Ignored(String),
    /// Recorded and applied; `plan_changed` when `users.plan` took a new value.
    Applied { change: Change, plan_changed: bool },
}

impl Store {
    pub async fn subscription_of_user(
        &self,
        user_id: i64,
    ) -> Result<Option<SubscriptionRecord>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE user_id = $1"
        ))
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The user whose stored subscription is `subscription_id`.
    pub async fn user_of_creem_subscription(
        &self,
        subscription_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM subscriptions WHERE creem_subscription_id = $1 ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(subscription_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The user whose stored Creem customer is `customer_id`.
    pub async fn user_of_creem_customer(
        &self,
        customer_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM subscriptions WHERE creem_customer_id = $1 ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(customer_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records an event that is not applied to anyone (an unknown type, say);
    /// false when its id was recorded before.
    pub async fn record_billing_event(
        &self,
        event_id: &str,
        event_type: &str,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "INSERT INTO billing_events (event_id, event_type, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event_id)
        .bind(event_type)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Handles one webhook event for `user_id` in a single transaction: records its
    /// id (a second delivery stops here), lets `decide` look at the stored
    /// subscription and the user's plan, and applies its decision to both. An event
    /// older than the stored one is never applied, even when two deliveries race.
    pub async fn apply_billing_event<F>(
        &self,
        event_id: &str,
        event_type: &str,
        user_id: i64,
        decide: F,
    ) -> Result<EventOutcome, StoreError>
    where
        F: FnOnce(Option<&SubscriptionRecord>, &str) -> Decision,
    {
        let mut tx = self.pool.begin().await?;
        // A write first, so that SQLite takes the write lock before the reads below.
        let inserted = sqlx::query(
            "INSERT INTO billing_events (event_id, event_type, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event_id)
        .bind(event_type)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(EventOutcome::Duplicate);
        }
        let current: Option<SubscriptionRecord> = sqlx::query_as(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE user_id = $1"
        ))
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let user_plan: String = sqlx::query_scalar("SELECT plan FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no user with id {user_id}")))?;
        let change = match decide(current.as_ref(), &user_plan) {
            Decision::Ignore(reason) => {
                tx.commit().await?;
                return Ok(EventOutcome::Ignored(reason));
            }
            Decision::Apply(change) => change,
        };
        let upserted = sqlx::query(
            "INSERT INTO subscriptions (user_id, creem_customer_id, creem_subscription_id, product_id, plan, status, \
             current_period_end, updated_at, last_event_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (user_id) DO UPDATE SET \
             creem_customer_id = COALESCE(excluded.creem_customer_id, subscriptions.creem_customer_id), \
             creem_subscription_id = COALESCE(excluded.creem_subscription_id, subscriptions.creem_subscription_id), \
             product_id = COALESCE(excluded.product_id, subscriptions.product_id), \
             plan = excluded.plan, status = excluded.status, \
             current_period_end = COALESCE(excluded.current_period_end, subscriptions.current_period_end), \
             updated_at = excluded.updated_at, last_event_at = excluded.last_event_at \
             WHERE subscriptions.last_event_at <= excluded.last_event_at",
        )
        .bind(user_id)
        .bind(change.customer_id.as_deref())
        .bind(change.subscription_id.as_deref())
        .bind(change.product_id.as_deref())
        .bind(&change.plan)
        .bind(&change.status)
        .bind(change.period_end)
        .bind(now_ms())
        .bind(change.at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if upserted == 0 {
            // A newer event was stored between our read and this write.
            tx.commit().await?;
            return Ok(EventOutcome::Ignored(
                "stale: a newer event was applied meanwhile".into(),
            ));
        }
        let plan_changed = sqlx::query("UPDATE users SET plan = $1 WHERE id = $2 AND plan <> $3")
            .bind(&change.plan)
            .bind(user_id)
            .bind(&change.plan)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        tx.commit().await?;
        Ok(EventOutcome::Applied {
            change,
            plan_changed,
        })
    }
}

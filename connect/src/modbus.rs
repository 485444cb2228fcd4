//! Modbus TCP: the polling connector for one source, and [`serve`], the device side the plant
//! simulator runs.
//!
//! The connector keeps one connection per source, reads each meter's registers when its
//! poll interval is due, decodes them with the meter's address ([`ModbusAddress::decode`])
//! and writes each poll's readings to the node's buffer as one batch. Modbus carries no
//! timestamps: a reading's source time is the node's clock when the answer arrived. An I/O
//! error or a timeout drops the connection and marks the source down; it reconnects with a
//! jittered backoff. A Modbus exception (illegal address, device busy) is that meter's
//! error and leaves the others polling.

use crate::feeds::{Cause, Health, Store, put, take_due};
use heatmesh_base::Backoff;
use heatmesh_ingest::meter::{ModbusAddress, ModbusSource, RegisterTable};
use heatmesh_ingest::{MeterSpec, Quality, Reading};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{Instant, timeout};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::*;

/// Polls one source's meters until the task is aborted.
pub async fn poll(
    plant: String,
    source: ModbusSource,
    meters: Vec<MeterSpec>,
    store: Store,
    health: Health,
) {
    let wait = Duration::from_millis(source.timeout_ms);
    let mut backoff = Backoff::named(
        Duration::from_millis(100),
        Duration::from_millis(source.reconnect_max_ms),
        &format!("{plant}/{}", source.id),
    );
    let mut due: Vec<Instant> = vec![Instant::now(); meters.len()];
    loop {
        let mut ctx = match connect(&source.endpoint, wait).await {
            Ok(c) => {
                backoff.reset();
                health.source_up(&plant, &source.id);
                c
            }
            Err(cause) => {
                health.source_down(&plant, &source.id, &meters, cause);
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        // Poll until the connection fails.
        let lost = loop {
            let next = *due.iter().min().expect("a source has meters");
            tokio::time::sleep_until(next).await;
            let now = Instant::now();
            let mut readings = Vec::new();
            let mut lost = None;
            for i in take_due(&mut due, &meters, now) {
                let m = &meters[i];
                let addr = m
                    .modbus
                    .as_ref()
                    .expect("validated: a modbus meter has an address");
                match read(&mut ctx, addr, wait).await {
                    Ok(Ok(regs)) => match addr.decode(&regs) {
                        Some(raw) if raw.is_finite() => {
                            let r = Reading {
                                meter: m.id.clone(),
                                time_us: crate::now_us(),
                                raw,
                                quality: Quality::Good,
                                status: 0,
                            };
                            health.reading(&plant, m, &r);
                            readings.push(r);
                        }
                        _ => health.meter_error(
                            &plant,
                            &m.id,
                            Cause::BadValue(
                                "registers decode to a value that is not finite".into(),
                            ),
                        ),
                    },
                    Ok(Err(code)) => health.meter_error(
                        &plant,
                        &m.id,
                        Cause::BadStatus(format!("Modbus exception {code:?}")),
                    ),
                    Err(cause) => {
                        lost = Some(cause);
                        break;
                    }
                }
            }
            if !readings.is_empty() {
                put(&store, &health, &plant, &source.id, readings).await;
            }
            if let Some(cause) = lost {
                break cause;
            }
        };
        health.source_down(&plant, &source.id, &meters, lost);
        let _ = ctx.disconnect().await;
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn connect(endpoint: &str, wait: Duration) -> Result<Context, Cause> {
    let addr = match timeout(wait, tokio::net::lookup_host(endpoint)).await {
        Ok(Ok(mut a)) => a
            .next()
            .ok_or_else(|| Cause::Refused(format!("{endpoint} resolves to no address")))?,
        Ok(Err(e)) => return Err(Cause::Refused(format!("{endpoint}: {e}"))),
        Err(_) => return Err(Cause::Timeout),
    };
    match timeout(wait, tcp::connect(addr)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(Cause::Refused(format!("{endpoint}: {e}"))),
        Err(_) => Err(Cause::Timeout),
    }
}

type Answer = Result<Vec<u16>, ExceptionCode>;

async fn read(ctx: &mut Context, a: &ModbusAddress, wait: Duration) -> Result<Answer, Cause> {
    ctx.set_slave(Slave(a.unit));
    let n = a.kind.width();
    let call = async {
        match a.table {
            RegisterTable::Holding => ctx.read_holding_registers(a.register, n).await,
            RegisterTable::Input => ctx.read_input_registers(a.register, n).await,
        }
    };
    match timeout(wait, call).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(Cause::Refused(e.to_string())),
        Err(_) => Err(Cause::Timeout),
    }
}

/// The registers a simulated device serves: (unit, table, register) -> value.
pub type Registers = Arc<Mutex<HashMap<(u8, RegisterTable, u16), u16>>>;

#[derive(Clone)]
struct Device {
    registers: Registers,
}

impl tokio_modbus::server::Service for Device {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let regs = self.registers.lock().unwrap_or_else(|e| e.into_inner());
        let read = |table, addr: u16, n: u16| -> Result<Vec<u16>, ExceptionCode> {
            (0..n)
                .map(|i| {
                    regs.get(&(req.slave, table, addr.wrapping_add(i)))
                        .copied()
                        .ok_or(ExceptionCode::IllegalDataAddress)
                })
                .collect()
        };
        std::future::ready(match req.request {
            Request::ReadHoldingRegisters(a, n) => {
                read(RegisterTable::Holding, a, n).map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(a, n) => {
                read(RegisterTable::Input, a, n).map(Response::ReadInputRegisters)
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// Serves `registers` as a Modbus TCP device on `listener` until the future is dropped
/// (dropping it also ends every open connection: a server that stops).
pub async fn serve(listener: tokio::net::TcpListener, registers: Registers) -> std::io::Result<()> {
    let server = tokio_modbus::server::tcp::Server::new(listener);
    let device = Device { registers };
    let on_connected = |stream, addr| {
        let device = device.clone();
        async move {
            tokio_modbus::server::tcp::accept_tcp_connection(stream, addr, move |_| {
                Ok(Some(device.clone()))
            })
        }
    };
    server
        .serve(&on_connected, |e| {
            tracing::debug!("modbus server connection: {e}")
        })
        .await
}

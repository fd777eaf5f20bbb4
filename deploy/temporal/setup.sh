#!/bin/sh
# One-shot set-up of the Temporal namespace for tocsin (run by the temporal-setup service, admin-tools image):
# creates the namespace if it is missing, registers tocsin's search attributes (tocsin/core/contracts.py,
# SPEC 6), then waits until the server lists them, so that the worker and clients started after this never
# meet an unknown search attribute.
# Idempotent: a namespace and attributes that exist already are left alone.
set -eu

ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
# name:type, as `temporal operator search-attribute create --type` spells the types.
SEARCH_ATTRIBUTES="TocsinState:Keyword TocsinStep:Keyword TocsinWorkflowKey:Keyword TocsinTenant:Keyword TocsinDueAt:Datetime"

RETENTION="${NAMESPACE_RETENTION:-72h}"

tries=0
until temporal operator cluster health --address "$ADDRESS" > /dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 120 ]; then
        echo "Temporal never became healthy on $ADDRESS" >&2
        exit 1
    fi
    echo "waiting for Temporal on $ADDRESS"
    sleep 1
done

if temporal operator namespace describe --address "$ADDRESS" --namespace "$NAMESPACE" > /dev/null 2>&1; then
    echo "namespace $NAMESPACE exists"
else
    echo "creating namespace $NAMESPACE (retention $RETENTION)"
    temporal operator namespace create --address "$ADDRESS" --namespace "$NAMESPACE" --retention "$RETENTION"
fi

listed() {
    temporal operator search-attribute list --address "$ADDRESS" --namespace "$NAMESPACE" 2> /dev/null
}

for pair in $SEARCH_ATTRIBUTES; do
    name="${pair%%:*}"
    type="${pair#*:}"
    if listed | grep -qw "$name"; then
        echo "search attribute $name exists"
    else
        echo "creating search attribute $name ($type)"
        temporal operator search-attribute create --address "$ADDRESS" --namespace "$NAMESPACE" \
            --name "$name" --type "$type"
    fi
done

tries=0
for pair in $SEARCH_ATTRIBUTES; do
    name="${pair%%:*}"
    until listed | grep -qw "$name"; do
        tries=$((tries + 1))
        if [ "$tries" -ge 60 ]; then
            echo "search attribute $name is still not listed" >&2
            exit 1
        fi
        sleep 1
    done
done
echo "tocsin's search attributes are registered on namespace $NAMESPACE"

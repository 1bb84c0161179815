"""The unit of work and repositories on SQLAlchemy 2.x (the ``sqlalchemy`` extra).

Importing :mod:`messagebus` does not import SQLAlchemy; importing this package does::

    from messagebus.sqlalchemy import SqlAlchemyRepository, SqlAlchemyUnitOfWork

    session_factory = sessionmaker(create_engine(url))
    bus = MessageBus(
        registry,
        uow=lambda: SqlAlchemyUnitOfWork(
            session_factory, products=SqlAlchemyRepository(Product, key="sku")
        ),
    )
"""

from ._repository import SqlAlchemyRepository
from ._unit_of_work import SqlAlchemyUnitOfWork

__all__ = ["SqlAlchemyRepository", "SqlAlchemyUnitOfWork"]
